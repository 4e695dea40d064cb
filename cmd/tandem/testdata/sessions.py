"""A session-store workload for TestPymemcacheSessions (clients_test.go).

Usage: /usr/bin/python3 sessions.py HOST PORT

Drives a memcached-compatible server through pymemcache the way a web
application's session store does: create sessions, read them on every
request, update them with gets/cas, log users out (delete), extend sessions
(touch), batch reads (get_many/gets_many) and per-user counters (incr/decr).
The script keeps its own model of what the server must hold and checks every
reply against it. It prints each difference and exits 1 if there was any,
exits 0 and prints a summary otherwise. It is deterministic (fixed seed) and
starts with flush_all, so it must only be pointed at a throwaway server.
"""

import json
import random
import sys
import traceback

from pymemcache.client.base import Client

SESSIONS = 2000
USERS = 200
TTL = 1800  # seconds: a typical session lifetime
BATCH = 100  # keys per get_many / set_many, as an application would batch

# Client flags the serde stores with each value, so a read decodes by type.
FLAG_BYTES, FLAG_INT, FLAG_JSON = 0, 1, 2


class SessionSerde:
    """bytes as they are, ints as decimal text (so incr/decr work), anything
    else as JSON."""

    def serialize(self, key, value):
        if isinstance(value, bytes):
            return value, FLAG_BYTES
        if isinstance(value, int):
            return str(value).encode(), FLAG_INT
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode(), FLAG_JSON

    def deserialize(self, key, value, flags):
        if flags == FLAG_BYTES:
            return value
        if flags == FLAG_INT:
            # memcached pads a decremented number with spaces in place;
            # int() ignores them, as applications do.
            return int(value)
        if flags == FLAG_JSON:
            return json.loads(value)
        raise ValueError("key %r: unexpected flags %d" % (key, flags))


class Checker:
    def __init__(self):
        self.model = {}  # key -> value the server must hold; absent = miss
        self.errors = []
        self.checks = 0

    def fail(self, what):
        self.errors.append(what)
        if len(self.errors) <= 50:
            print("MISMATCH: " + what, flush=True)

    def expect(self, what, got, want):
        self.checks += 1
        if got != want:
            self.fail("%s: got %s, want %s" % (what, short(got), short(want)))

    def expect_value(self, what, key, got):
        """got is what a read returned for key (None for a miss)."""
        self.expect("%s %s" % (what, key), got, self.model.get(key))


def short(v):
    r = repr(v)
    return r if len(r) <= 200 else r[:200] + "...(%d chars)" % len(r)


def new_client(host, port):
    # default_noreply=False: wait for every reply, so each one can be checked.
    return Client((host, port), serde=SessionSerde(), connect_timeout=5,
                  timeout=10, default_noreply=False, no_delay=True)


def session_value(rng, i, user):
    if i % 4 == 3:
        # An opaque blob (say, an encrypted cookie payload): binary-safe,
        # with CR LF, NUL and protocol words inside.
        n = rng.randrange(0, 3000)
        blob = rng.randbytes(n)
        return b"\r\nEND\r\n\x00" + blob + b"VALUE x 0 1\r\n"
    return {
        "user": user,
        "created": 1700000000 + i,
        "csrf": "%032x" % rng.getrandbits(128),
        "cart": [rng.randrange(10000) for _ in range(rng.randrange(0, 20))],
        "prefs": {"lang": rng.choice(["en", "de", "ja", "pt"]), "dark": i % 2 == 0},
        # Some sessions are large, so several slab classes are in play.
        "notes": "n" * (rng.randrange(0, 20000) if i % 10 == 0 else rng.randrange(0, 200)),
        "version": 0,
    }


def batches(keys):
    for i in range(0, len(keys), BATCH):
        yield keys[i:i + BATCH]


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    c = Checker()
    try:
        workload(c, host, port)
    except Exception:
        # A reply the client could not take (an error line, a dropped
        # connection): the traceback names the call.
        traceback.print_exc()
        print("FAILED: exception after %d checks (%d mismatches before it)" % (c.checks, len(c.errors)))
        return 1
    if c.errors:
        print("FAILED: %d of %d checks differ from the model" % (len(c.errors), c.checks))
        return 1
    print("ok")
    return 0


def workload(c, host, port):
    rng = random.Random(20240601)
    mc = new_client(host, port)
    other = new_client(host, port)  # a second app server racing the first
    m = c.model

    c.expect("flush_all", mc.flush_all(), True)
    c.expect("version is memcached-like", mc.version().split(b".")[0].isdigit(), True)

    users = ["u%04d" % u for u in range(USERS)]
    keys = []
    owner = {}
    for i in range(SESSIONS):
        keys.append("sess:%032x" % rng.getrandbits(128))
        owner[keys[i]] = users[i % USERS]

    # Per-user counters: add creates them once; a second add must fail.
    for u in users:
        for ctr in ("hits:", "active:"):
            c.expect("add counter " + ctr + u, mc.add(ctr + u, 0, expire=TTL), True)
            m[ctr + u] = 0
    c.expect("add existing counter", mc.add("hits:" + users[0], 99, expire=TTL), False)

    # Log in: the first half with one set each, the rest pipelined with set_many.
    values = {k: session_value(rng, i, owner[k]) for i, k in enumerate(keys)}
    half = SESSIONS // 2
    for k in keys[:half]:
        c.expect("set " + k, mc.set(k, values[k], expire=TTL), True)
        m[k] = values[k]
    for b in batches(keys[half:]):
        c.expect("set_many failed keys", mc.set_many({k: values[k] for k in b}, expire=TTL), [])
        for k in b:
            m[k] = values[k]
    for k in keys:
        u = owner[k]
        c.expect("incr active:" + u, mc.incr("active:" + u, 1), m["active:" + u] + 1)
        m["active:" + u] += 1

    # A second login with the same session id must not clobber it.
    c.expect("add existing session", mc.add(keys[0], {"evil": True}, expire=TTL), False)

    # Every request reads its session and counts a hit for the user.
    for k in keys:
        c.expect_value("get", k, mc.get(k))
        u = owner[k]
        c.expect("incr hits:" + u, mc.incr("hits:" + u, 1), m["hits:" + u] + 1)
        m["hits:" + u] += 1

    # Batched reads; every CAS unique must be distinct.
    seen_cas = {}
    for b in batches(keys):
        got = mc.gets_many(b)
        c.expect("gets_many keys", sorted(got), sorted(b))
        for k, (v, cas) in got.items():
            c.expect_value("gets_many", k, v)
            if not isinstance(cas, bytes) or not cas.isdigit() or int(cas) == 0:
                c.fail("gets_many %s: bad cas %r" % (k, cas))
            elif cas in seen_cas:
                c.fail("gets_many: %s and %s share cas %r" % (seen_cas[cas], k, cas))
            seen_cas[cas] = k

    # Update a subset with a gets/cas loop. Every 5th update races a write from
    # the other app server between gets and cas, so the first cas must fail and
    # the loop must retry on the fresh value.
    json_keys = [k for k in keys if isinstance(m[k], dict)]
    updated = rng.sample(json_keys, 600)
    for n, k in enumerate(updated):
        raced = n % 5 == 0
        for attempt in range(3):
            v, cas = mc.gets(k)
            c.expect_value("gets before cas (attempt %d)" % attempt, k, v)
            if v is None:
                break
            if raced and attempt == 0:
                theirs = dict(v, version=v["version"] + 100, by="other")
                c.expect("racing set " + k, other.set(k, theirs, expire=TTL), True)
                m[k] = theirs
            mine = dict(v, version=v["version"] + 1, cart=v["cart"] + [n])
            ok = mc.cas(k, mine, cas, expire=TTL)
            want = not (raced and attempt == 0)
            c.expect("cas %s (attempt %d, raced %s)" % (k, attempt, raced), ok, want)
            if ok:
                m[k] = mine
                # The same unique again is stale now.
                c.expect("cas with a used unique " + k, mc.cas(k, {"stale": 1}, cas, expire=TTL), False)
                break
        c.expect_value("get after cas", k, mc.get(k))

    # Log out: delete the session, decrement the user's active count.
    live = [k for k in keys if k in m]
    logged_out = rng.sample(live, 400)
    for k in logged_out:
        _, cas = mc.gets(k)
        c.expect("delete " + k, mc.delete(k), True)
        del m[k]
        u = owner[k]
        c.expect("decr active:" + u, mc.decr("active:" + u, 1), m["active:" + u] - 1)
        m["active:" + u] -= 1
        c.expect("delete again " + k, mc.delete(k), False)
        c.expect_value("get after delete", k, mc.get(k))
        c.expect("gets after delete " + k, mc.gets(k), (None, None))
        c.expect("touch after delete " + k, mc.touch(k, TTL), False)
        c.expect("cas after delete " + k, mc.cas(k, {"ghost": 1}, cas, expire=TTL), None)
        c.expect("replace after delete " + k, mc.replace(k, {"ghost": 2}, expire=TTL), False)
        c.expect_value("get after failed writes", k, mc.get(k))

    # Keep-alive: extend some sessions; force-expire a few (a negative TTL
    # expires an item at once).
    live = [k for k in keys if k in m]
    touched = rng.sample(live, 600)
    for k in touched[:550]:
        c.expect("touch " + k, mc.touch(k, 2 * TTL), True)
        c.expect_value("get after touch", k, mc.get(k))
    for k in touched[550:]:
        c.expect("touch -1 " + k, mc.touch(k, -1), True)
        del m[k]
        c.expect_value("get after touch -1", k, mc.get(k))

    # Rewrite some sessions in place: replace the JSON ones, append to and
    # prepend onto the binary ones (flags are kept by append/prepend).
    live = [k for k in keys if k in m]
    for k in rng.sample(live, 300):
        if isinstance(m[k], dict):
            nv = dict(m[k], rotated=True)
            c.expect("replace " + k, mc.replace(k, nv, expire=TTL), True)
        else:
            c.expect("append " + k, mc.append(k, b"\r\n+tail\x00"), True)
            c.expect("prepend " + k, mc.prepend(k, b"head\r\n"), True)
            nv = b"head\r\n" + m[k] + b"\r\n+tail\x00"
        m[k] = nv
        c.expect_value("get after rewrite", k, mc.get(k))
    missing = "sess:never-created"
    c.expect("append to a missing session", mc.append(missing, b"x"), False)
    c.expect("prepend to a missing session", mc.prepend(missing, b"x"), False)
    c.expect("incr a missing counter", mc.incr("hits:nobody", 1), None)
    c.expect("decr a missing counter", mc.decr("hits:nobody", 1), None)
    c.expect_value("get a missing key", missing, mc.get(missing))

    # decr floors at zero.
    u = users[-1]
    c.expect("decr below zero", mc.decr("hits:" + u, m["hits:" + u] + 1000), 0)
    m["hits:" + u] = 0
    c.expect("incr after floor", mc.incr("hits:" + u, 7), 7)
    m["hits:" + u] = 7

    # Batched reads over live and dead sessions: exactly the live ones come back.
    for b in batches(keys):
        got = mc.get_many(b)
        c.expect("get_many keys", sorted(got), sorted(k for k in b if k in m))
        for k in b:
            if k in got:
                c.expect_value("get_many", k, got[k])

    # Final sweep over everything, counters included, through the other client.
    for k in keys + ["hits:" + u for u in users] + ["active:" + u for u in users]:
        c.expect_value("final get", k, other.get(k))
    for u in users:
        want = sum(1 for k in keys if owner[k] == u and k not in logged_out)
        c.expect("active sessions of " + u, m["active:" + u], want)

    stats = mc.stats()
    for name in (b"curr_items", b"get_hits", b"cmd_set", b"cas_hits", b"cas_badval"):
        if name not in stats:
            c.fail("stats: no %s" % name.decode())
    c.expect("stats cas_badval >= raced updates", stats.get(b"cas_badval", 0) >= 120, True)

    mc.close()
    other.close()
    print("workload done: %d checks, %d sessions (%d updated with cas, %d logged out, %d touched), %d live keys"
          % (c.checks, SESSIONS, len(updated), len(logged_out), len(touched), len(m)))


if __name__ == "__main__":
    sys.exit(main())
