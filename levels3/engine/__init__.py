"""The engine: everything levels3 knows about LevelDB's files in an object store.

The native Env calls the control path (control: EnvControl, with writer and
follower), which maps files onto objects (layout, segments), keeps what the
store holds in memory (catalog) and on local disk (cache), commits CURRENT
(commit), defers deletion (reaper) and records checkpoints (checkpoints).
manifest and inventory read LevelDB's formats without LevelDB, for the CLI.
The engine may call the stores and levels3.lock; it never imports the bridge.
"""
