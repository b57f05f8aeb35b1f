"""The RFC 9110 grammar that more than one layer checks, defined once.

The HTTP/1.1 pre-scan reads methods and field names with it, the response writer checks the
app's header names, and the WebSocket handshake checks the headers of the app's 101 or
denial response.
"""

from __future__ import annotations

import re

#: tchar (RFC 9110 §5.6.2), as the body of a regex character class.
TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
#: A token: a method, a field name, a transfer coding.
TOKEN = re.compile(rb"[" + TCHAR + rb"]+")
