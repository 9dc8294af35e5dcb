#!/usr/bin/env python3
# POP3 (mta) and IMAP (Dovecot) clients on one Maildir: argv = scenario, port, then more.
# Prints one line per message it saw ("SUBJECT uid"), then OK.
import imaplib
import poplib
import sys

scenario, port = sys.argv[1], int(sys.argv[2])


def subject(lines):
    for l in lines:
        if l.lower().startswith(b"subject:"):
            return l.split(b":", 1)[1].strip().decode()
    return "?"


if scenario == "pop-delete":
    # Log in to mta's POP3, delete the message whose subject is argv[3], list the rest.
    p = poplib.POP3("127.0.0.1", port, timeout=20)
    p.user("fred")
    p.pass_("fred's secret")
    _, uidls, _ = p.uidl()
    for l in uidls:
        n, uid = l.split()
        _, lines, _ = p.retr(int(n))
        s = subject(lines)
        if s == sys.argv[3]:
            p.dele(int(n))
        else:
            print(s, uid.decode())
    p.quit()
elif scenario == "pop-list":
    p = poplib.POP3("127.0.0.1", port, timeout=20)
    p.user("fred")
    p.pass_("fred's secret")
    _, uidls, _ = p.uidl()
    for l in uidls:
        n, uid = l.split()
        _, lines, _ = p.retr(int(n))
        print(subject(lines), uid.decode())
    p.quit()
elif scenario == "imap-read":
    # Dovecot: every message of INBOX with its subject; then mark them all seen.
    m = imaplib.IMAP4("127.0.0.1", port)
    m.login("fred", "secret")
    m.select("INBOX")
    _, data = m.search(None, "ALL")
    for n in data[0].split():
        _, parts = m.fetch(n, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        print(subject(parts[0][1].splitlines()), n.decode())
    m.store("1:*", "+FLAGS", "\\Seen")
    m.logout()
else:
    sys.exit("unknown scenario " + scenario)
print("OK")
