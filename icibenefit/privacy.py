"""Pseudonymisation of patient identifiers for logs, indexes and audit trails.

Nothing that identifies a patient may appear in clear text in a log line.  The
service therefore refers to patients by a keyed hash (HMAC-SHA256 with a site
key from the settings), which is stable within a site, so an operator can follow
one patient through the logs, but cannot be reversed or matched across sites.
"""

import hashlib
import hmac


def pseudonymize(identifier: str, key: str) -> str:
    """Return a 16-hex-digit keyed hash of a patient identifier.

    Parameters
    ----------
    identifier
        The clear-text identifier (PatientID, FHIR id, name...).
    key
        The site pseudonymisation key (``Settings.pseudonym_key``).

    Returns
    -------
    str
        ``"p-"`` followed by 16 hex digits; 64 bits keep collisions negligible
        for any hospital's patient count while staying short enough to read.
    """
    digest = hmac.new(key.encode(), identifier.encode(), hashlib.sha256).hexdigest()
    return f"p-{digest[:16]}"
