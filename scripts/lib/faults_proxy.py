#!/usr/bin/env python3
"""A TCP proxy that can go silent, for the fault stage (scripts/test-faults.sh, scenario 9).

    faults_proxy.py LISTEN_PORT TARGET_HOST TARGET_PORT

Forwards every connection to the target. On SIGUSR1 it goes silent: it stops forwarding bytes in both
directions but keeps every socket open (the peers see a connection that answers nothing, neither a
reset nor a close), and it accepts new connections without opening their upstream side. On SIGUSR2 it
resumes: what was held is forwarded and held connections get their upstream. SIGTERM ends it.

Silence is what a network partition, a hung server or a stateful firewall dropping a flow looks like
from the client: the kernel keeps the connection, so only a client-side timeout notices. Killing the
server or closing the socket would test something else (a reset, which every client notices at once).

Each state change and each connection's end is logged to stderr with the open connections count.
"""

import asyncio
import signal
import sys
import time

flowing = asyncio.Event()
open_connections = 0


def log(msg: str) -> None:
    stamp = time.strftime("%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}"
    print(f"{stamp} proxy: {msg} ({open_connections} open)", file=sys.stderr, flush=True)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies reader to writer while flowing; while silent, neither reads nor writes."""
    try:
        while True:
            await flowing.wait()
            data = await reader.read(65536)
            if not data:
                break
            # Bytes read just before the silence began are held, not forwarded, until it ends.
            await flowing.wait()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def serve(client_r, client_w, host: str, port: int) -> None:
    global open_connections
    open_connections += 1
    try:
        # A connection accepted during the silence waits here: the client sees its connect succeed
        # and then nothing.
        await flowing.wait()
        try:
            up_r, up_w = await asyncio.open_connection(host, port)
        except OSError as e:
            log(f"upstream connect failed: {e}")
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))
    finally:
        open_connections -= 1


def silence() -> None:
    flowing.clear()
    log("silent: forwarding nothing, accepting and ignoring new connections")


def resume() -> None:
    flowing.set()
    log("resumed")


async def main() -> None:
    listen, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    flowing.set()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, silence)
    loop.add_signal_handler(signal.SIGUSR2, resume)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    server = await asyncio.start_server(lambda r, w: serve(r, w, host, port), "127.0.0.1", listen)
    log(f"listening on 127.0.0.1:{listen}, forwarding to {host}:{port}")
    async with server:
        await stop


if __name__ == "__main__":
    asyncio.run(main())
