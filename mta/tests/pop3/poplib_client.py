#!/usr/bin/env python3
# Python's poplib against `mta run --listen-pop3`: argv = port, then a scenario name.
import poplib
import sys

port = int(sys.argv[1])
scenario = sys.argv[2]


def connect():
    return poplib.POP3("127.0.0.1", port, timeout=20)


def check(cond, what):
    if not cond:
        print("FAIL:", what)
        sys.exit(1)


if scenario == "bad-password":
    p = connect()
    p.user("fred")
    try:
        p.pass_("wrong")
        check(False, "a wrong password was accepted")
    except poplib.error_proto as e:
        check(b"authorization failed" in e.args[0], repr(e))
    p.quit()
    print("OK")
elif scenario == "tls":
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    p = connect()
    check("STLS" in p.capa(), "STLS offered")
    p.stls(ctx)
    check("STLS" not in p.capa(), "STLS no longer offered once on")
    p.user("fred")
    p.pass_("fred's secret")
    count, _ = p.stat()
    check(count == 2, "stat over STLS: %d" % count)
    p.quit()
    p = poplib.POP3_SSL("127.0.0.1", int(sys.argv[3]), context=ctx, timeout=20)
    p.user("fred")
    p.pass_("fred's secret")
    _, lines, _ = p.retr(1)
    check(len(lines) > 2, "retr over POP3S")
    p.quit()
    print("OK")
elif scenario == "read-and-delete":
    p = connect()
    caps = p.capa()
    check("UIDL" in caps and "TOP" in caps, repr(caps))
    p.user("fred")
    p.pass_("fred's secret")
    count, size = p.stat()
    check(count == 2, "stat %r" % ((count, size),))
    _, listing, _ = p.list()
    sizes = [int(l.split()[1]) for l in listing]
    check(sum(sizes) == size, "list %r vs stat %d" % (listing, size))
    _, uidls, _ = p.uidl()
    uids = [l.split()[1] for l in uidls]
    bodies = []
    for i in (1, 2):
        _, lines, octets = p.retr(i)
        check(octets == sizes[i - 1], "retr %d: %d octets, LIST said %d" % (i, octets, sizes[i - 1]))
        bodies.append(lines)
    small = [b for b in bodies if len(b) < 100]
    check(len(small) == 1, "one small message")
    small = small[0]
    check(b".leading dot survives" in small, repr(small))
    check(b"Subject: pop me" in small, repr(small))
    big = [b for b in bodies if len(b) >= 100][0]
    check(all(l == b"x" * 70 for l in big[big.index(b"") + 1:]), "big body intact")
    _, top, _ = p.top(1, 0)
    check(top[-1] == b"", "top 0 ends with the blank line: %r" % top[-3:])
    small_no = 1 + [len(b) < 100 for b in bodies].index(True)
    p.dele(small_no)
    p.rset()
    p.dele(small_no)
    p.quit()
    p = connect()
    p.apop("fred", "fred's secret")
    count, _ = p.stat()
    check(count == 1, "after QUIT one message is left, not %d" % count)
    _, uidls2, _ = p.uidl()
    left = uids[2 - small_no]
    check([l.split()[1] for l in uidls2] == [left], "UIDL stable: %r vs %r" % (uidls2, uids))
    p.quit()
    print("OK")
else:
    sys.exit("unknown scenario " + scenario)
