"""Keep credentials out of the log records botocore and urllib3 emit while levels3 runs.

At DEBUG, botocore logs every prepared request (its ``X-Amz-Security-Token`` header
and the access key id in ``Authorization: ... Credential=``) and the canonical
request it signs (the session token again).  A filter on those loggers rewrites
each record before any handler sees it: the secret key, session token and access
key id of every client levels3 uses are replaced by ``***``, and so is whatever
follows ``X-Amz-Security-Token`` or ``Credential=`` (credentials levels3 never saw,
such as a user's own client's).  The request signature stays: it is derived from
the secret and cannot be turned back into it.  The filter only runs on records that
are emitted anyway, so logging that is off costs nothing.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

MASK = "***"
_PREFIXES = ("botocore", "boto3", "urllib3", "s3transfer")
_PATTERNS = (
    # 'X-Amz-Security-Token': b'...'  |  x-amz-security-token:...  |  X-Amz-Security-Token=...
    re.compile(r"(?i)(x-amz-security-token['\"]?\s*[:=]\s*b?['\"]?)[^'\"\s,&;}]+"),
    re.compile(r"(?i)(credential=)[^/\s'\",]+"),
)


class CredentialRedactor(logging.Filter):
    """Masks known credential values and credential-shaped headers in a record's message."""

    def __init__(self) -> None:
        super().__init__("levels3-credential-redactor")
        self._mu = threading.Lock()
        self._values: set[str] = set()

    def remember(self, *values: str | None) -> None:
        with self._mu:
            # Very short values would mask ordinary words; real credentials are longer.
            self._values.update(v for v in values if v and len(v) >= 6)

    def redact(self, text: str) -> str:
        with self._mu:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            if value in text:
                text = text.replace(value, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the logging module's to report
            return True
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_redactor = CredentialRedactor()


def redact_credentials_in_logs(client: Any) -> None:
    """Remember ``client``'s credentials and filter every botocore/urllib3 logger that exists now.

    Filters on a logger see only the records logged on it (not its children's), so
    each logger gets one; called for every client levels3 builds or is given, it also
    reaches the loggers botocore's modules created since the last call.
    """
    try:
        credentials = client._request_signer._credentials  # botocore keeps them there
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
    except Exception:
        frozen = None
    if frozen is not None:
        _redactor.remember(frozen.access_key, frozen.secret_key, frozen.token)
    names = [name for name in list(logging.root.manager.loggerDict) if name.split(".")[0] in _PREFIXES]
    for name in names + list(_PREFIXES):
        logger = logging.getLogger(name)
        if _redactor not in logger.filters:
            logger.addFilter(_redactor)
