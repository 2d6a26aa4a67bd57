#!/usr/bin/env python3
"""Which B-trees one commit writes: BENCHMARKS.md, "Ninth session".

Usage: commit_pages.py DB EVENTS.ndjson [PROTOCOL_MIRROR]

DB is a replica (e.g. `protocol-mirror --db DB import` of the first 200,000 events of
`mirror-bench generate --mix stream`), EVENTS a few more lines of the same stream. The
script checkpoints DB, keeps a connection open (so that the WAL is neither checkpointed
nor removed when `import` closes), imports EVENTS in one transaction, then reads the
page number of every frame in DB-wal and names its B-tree with SQLite's `dbstat`.
Needs Python's sqlite3 built with dbstat (most are).
"""
import collections
import os
import sqlite3
import struct
import subprocess
import sys


def main():
    db, events = sys.argv[1], sys.argv[2]
    binary = sys.argv[3] if len(sys.argv) > 3 else "protocol-mirror"
    keep = sqlite3.connect(db)
    keep.execute("SELECT count(*) FROM events").fetchone()
    keep.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    subprocess.run([binary, "--db", db, "import", events], check=True)
    with open(db + "-wal", "rb") as f:
        wal = f.read()
    page_size = struct.unpack(">I", wal[8:12])[0]
    pages, offset = [], 32
    while offset + 24 + page_size <= len(wal):
        pages.append(struct.unpack(">I", wal[offset:offset + 4])[0])
        offset += 24 + page_size
    owner = dict(keep.execute("SELECT pageno, name FROM dbstat"))
    counts = collections.Counter(owner.get(page, "?") for page in pages)
    print(f"{len(pages)} frames, {len(set(pages))} distinct pages, WAL {os.path.getsize(db + '-wal')} bytes")
    for name, n in counts.most_common():
        print(f"{n:6d}  {name}")


if __name__ == "__main__":
    main()
