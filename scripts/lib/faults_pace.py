#!/usr/bin/env python3
"""Copies stdin to stdout line by line, a burst first and then at a steady rate, for the fault stage's
producer (scripts/lib/faults-load.sh).

    faults_pace.py BURST RATE COUNT_FILE < records | kafka console producer

The first BURST lines go out at once (the backlog a fault strikes into), the rest at RATE lines a
second (the records that keep arriving while the fault lasts). Every 0.1 s and at the end,
COUNT_FILE holds the number of lines written so far, replaced atomically so that a reader never sees
half a number.
"""

import os
import sys
import time


def main() -> None:
    burst, rate, count_file = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    out = sys.stdout.buffer
    written = 0
    last_report = 0.0
    start = None

    def report() -> None:
        tmp = count_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{written}\n")
        os.replace(tmp, count_file)

    report()
    for line in sys.stdin.buffer:
        if written >= burst:
            now = time.monotonic()
            if start is None:
                start = now
            due = start + (written - burst) / rate
            # A reader that stalled gets no burst to catch up beyond half a second's worth: the
            # rate is a rate from then on.
            if now - due > 0.5:
                start += now - due - 0.5
                due = now - 0.5
            # Sleeping per line would be 1,500 wake-ups a second; a group per 5 ms is smooth enough.
            if due - now > 0.005:
                out.flush()
                time.sleep(due - now)
        out.write(line)
        written += 1
        if written == burst or time.monotonic() - last_report >= 0.1:
            out.flush()
            report()
            last_report = time.monotonic()
    out.flush()
    report()


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        sys.exit(1)
