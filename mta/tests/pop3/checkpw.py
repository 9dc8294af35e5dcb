#!/usr/bin/env python3
# A checkpassword for the tests: reads user\0password\0timestamp\0 from fd 3; the password
# field is the password, or for APOP md5(timestamp + secret) in hex.
import hashlib
import os
import sys

USERS = {b"fred": b"fred's secret", b"joe": b"joepw"}

data = b""
while len(data) < 512:
    chunk = os.read(3, 512 - len(data))
    if not chunk:
        break
    data += chunk
fields = data.split(b"\0")
if len(fields) < 4:
    sys.exit(2)
user, password, timestamp = fields[0], fields[1], fields[2]
secret = USERS.get(user)
if secret is None:
    sys.exit(1)
# The plain password, or (APOP) the digest of the timestamp and the secret.
ok = password == secret or (
    timestamp != b"" and hashlib.md5(timestamp + secret).hexdigest().encode() == password
)
if not ok:
    sys.exit(1)
if len(sys.argv) > 1:
    os.execvp(sys.argv[1], sys.argv[1:])
sys.exit(0)
