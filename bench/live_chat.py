"""Live chat benchmark: 1,000 WebSocket clients in one room on loopback, messages at the rate
limit (5 per 10 s per sender) from many senders; delivery latency (send -> every receiver),
losses, and the server's CPU and memory.

    python bench/live_chat.py [--clients 1000 --senders 20 --seconds 20 --client-procs 2] [--scale-out]

Baseline, measured in the same run with the same clients: a bare fan-out server made of the
`websockets` library alone (no auth, no database, no rules: it broadcasts every text frame it
receives to every connection). The ratio says what clipfeed's chat costs on top of the raw
WebSocket fan-out on this machine.

Clients run in separate processes (asyncio, `websockets`), all joined before the first message;
each sender sends one message every 10/5 s (plus 2.5 % so the server's sliding window never sees
an early one), with a random phase. Latency = receive time - the send time carried in the message
nonce (same machine, same clock). Lost = expected deliveries (accepted messages x connected
clients) - received.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import ServerProcess, free_port, print_table, register  # noqa: E402

GOAL_P99_MS = 50.0
# Browsers always offer permessage-deflate and uvicorn accepts it: compress like them by default.
COMPRESSION = os.environ.get("BENCH_CHAT_COMPRESSION", "1") != "0"
# Listening clients as raw sockets (default; no compression for them) or as `websockets` clients
# (BENCH_CHAT_LIBRARY_READERS=1, which then compress like browsers per BENCH_CHAT_COMPRESSION).
RAW_READERS = os.environ.get("BENCH_CHAT_LIBRARY_READERS", "0") != "1"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


# --- the baseline server (a subprocess running this file with --baseline-server PORT) --------------

def run_baseline_server(port: int) -> None:
    import logging

    from websockets.asyncio.server import broadcast, serve

    logging.getLogger("websockets").setLevel(logging.CRITICAL)  # raw readers just hang up at the end

    connections = set()

    async def handler(ws):
        connections.add(ws)
        try:
            await ws.send('{"type":"hello"}')
            await ws.send('{"type":"backlog","messages":[]}')
            async for text in ws:
                data = json.loads(text)  # noqa: PLW2901
                frame = json.dumps({"type": "message", "text": data["text"], "nonce": data.get("nonce"),
                                    "id": data.get("nonce")}, separators=(",", ":"))
                broadcast(connections, frame)
        except Exception:  # noqa: BLE001 - a client hanging up is the normal end here
            pass
        finally:
            connections.discard(ws)

    async def main():
        async with serve(handler, "127.0.0.1", port, max_queue=None):
            print("READY", flush=True)
            await asyncio.Future()

    asyncio.run(main())


# --- the client processes (this file with --clients-proc) ------------------------------------------

class RawReader(asyncio.Protocol):
    """A listening-only WebSocket client that does not parse frames: it finds the send times in
    the byte stream (server frames are unmasked, and without permessage-deflate the JSON is
    plain) and answers pings. A thousand library clients cost the shared CPU more than the server
    under test; these cost almost nothing, so the numbers describe the server."""

    MARK = b'"nonce":"t'

    def __init__(self, request: bytes, record, ready: asyncio.Future):
        self.request, self.record, self.ready = request, record, ready
        self.head = b""
        self.tail = b""
        self.open = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.open:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in self.head[:end]:
                self.ready.set_exception(RuntimeError(self.head[:200]))
                return
            self.open = True
            data, self.head = self.head[end + 4:], b""
        chunk = self.tail + data
        position = 0
        while True:
            at = chunk.find(self.MARK, position)
            if at < 0:
                break
            bar = chunk.find(b"|", at)
            if bar < 0:
                position = at
                break
            self.record(float(chunk[at + 10:bar]), now)
            position = bar
        # 0x89 = FIN + ping; 0x04 never occurs in JSON text. Answer with a masked pong (zero mask).
        ping = chunk.find(b"\x89\x04")
        if ping >= 0 and len(chunk) >= ping + 6:
            self.transport.write(b"\x8a\x84\x00\x00\x00\x00" + chunk[ping + 2:ping + 6])
        if not self.ready.done() and b'"type":"backlog"' in chunk:
            self.ready.set_result(None)
        self.tail = chunk[max(position, len(chunk) - 64):]


async def open_raw(url: str, record) -> asyncio.Transport:
    import base64
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    transport, _ = await loop.create_connection(lambda: RawReader(request, record, ready), parts.hostname, parts.port)
    await asyncio.wait_for(ready, 120)
    return transport


async def run_clients(url: str, tokens: list[str | None], senders: int, interval: float, seconds: float,
                      out_path: str) -> None:
    import numpy as np
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    send_times: list[float] = []
    received = 0
    accepted = 0
    refused: dict[str, int] = {}
    sockets = []
    connect_gate = asyncio.Semaphore(50)

    async def open_one(token):
        async with connect_gate:
            full = url + (f"?token={token}" if token else "")
            ws = await connect(full, max_size=2**22, max_queue=None, open_timeout=120, ping_interval=None,
                               compression="deflate" if COMPRESSION else None)
            await ws.recv()  # hello
            await ws.recv()  # backlog
            return ws

    def record(sent_at: float, now: float) -> None:
        nonlocal received
        latencies.append(now - sent_at)
        send_times.append(sent_at)
        received += 1

    async def open_reader(token):
        async with connect_gate:
            return await open_raw(url, record)

    sockets = await asyncio.gather(*(open_one(token) for token in tokens[:senders]))
    raw = await asyncio.gather(*(open_reader(token) for token in tokens[senders:])) if RAW_READERS else []
    if not RAW_READERS:
        sockets += await asyncio.gather(*(open_one(token) for token in tokens[senders:]))
    print("READY", flush=True)
    start_line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    start_at = float(start_line.split()[1])
    stop_sending = start_at + seconds
    pid = os.getpid()

    async def reader(ws):
        nonlocal received
        # Cheap on purpose (a substring, not a JSON parse): the clients share the machine with the
        # server, and every microsecond they spend is one the server does not get.
        async for text in ws:
            now = time.time()
            # A frame may be a JSON array of several messages the server fanned out together.
            at = text.find('"nonce":"t')
            if at >= 0:
                while at >= 0:
                    sent_at = float(text[at + 10:text.index("|", at)])
                    latencies.append(now - sent_at)
                    send_times.append(sent_at)
                    received += 1
                    at = text.find('"nonce":"t', at + 10)
            elif text.startswith('{"type":"error"'):
                code = json.loads(text).get("code", "?")
                refused[code] = refused.get(code, 0) + 1

    async def sender(index: int, ws):
        nonlocal accepted
        await asyncio.sleep(max(0.0, start_at - time.time()) + random.random() * interval)
        seq = 0
        while time.time() < stop_sending:
            seq += 1
            nonce = f"t{time.time():.6f}|{pid}|{index}|{seq}"
            await ws.send(json.dumps({"type": "message", "text": f"hello from {index} #{seq} :wave:", "nonce": nonce}))
            accepted += 1
            await asyncio.sleep(interval)

    readers = [asyncio.create_task(reader(ws)) for ws in sockets]
    await asyncio.gather(*(sender(i, sockets[i]) for i in range(senders)))
    # Drain: everything sent has had 3 s to arrive.
    await asyncio.sleep(3.0)
    for ws in sockets:
        await ws.close()
    for transport in raw:
        transport.close()
    for task in readers:
        task.cancel()
    np.save(out_path, np.asarray([send_times, latencies], dtype=np.float64).reshape(2, -1))
    print("RESULT " + json.dumps({"sent": accepted, "received": received, "refused": refused,
                                  "connected": len(sockets) + len(raw)}), flush=True)


# --- the driver ---------------------------------------------------------------------------------

def spawn_clients(url: str, shares: list[list[str | None]], senders_per_proc: list[int], interval: float,
                  seconds: float, workdir: Path) -> tuple[list, list[Path]]:
    """One client process per share; each share lists its sender tokens first."""
    procs, outs = [], []
    for n, share in enumerate(shares):
        spec = workdir / f"clients{n}.json"
        spec.write_text(json.dumps({"url": url, "tokens": share, "senders": senders_per_proc[n],
                                    "interval": interval, "seconds": seconds}))
        out = workdir / f"latencies{n}.npy"
        outs.append(out)
        procs.append(subprocess.Popen([sys.executable, __file__, "--clients-proc", str(spec), str(out)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for proc in procs:
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"client process failed: {line!r}")
    return procs, outs


def run_round(name: str, ws_url: str, sender_tokens: list[str | None], clients: int, interval: float,
              seconds: float, client_procs: int, server_pid: int, workdir: Path) -> dict:
    import numpy as np
    import psutil

    server = psutil.Process(server_pid)
    senders = len(sender_tokens)
    split = [senders // client_procs + (1 if n < senders % client_procs else 0) for n in range(client_procs)]
    shares: list[list[str | None]] = []
    cursor = 0
    for n, count in enumerate(split):
        readers = (clients - senders) // client_procs + (1 if n < (clients - senders) % client_procs else 0)
        shares.append(list(sender_tokens[cursor:cursor + count]) + [None] * readers)
        cursor += count
    rss_before = server.memory_info().rss
    t_connect = time.monotonic()
    procs, outs = spawn_clients(ws_url, shares, split, interval, seconds, workdir / name)
    connect_s = time.monotonic() - t_connect
    rss_joined = server.memory_info().rss
    cpu_before = server.cpu_times()
    wall_before = time.monotonic()
    start_at = time.time() + 0.5
    for proc in procs:
        proc.stdin.write(f"GO {start_at}\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        for line in proc.stdout:
            if line.startswith("RESULT "):
                results.append(json.loads(line[7:]))
                break
        proc.wait(timeout=120)
    wall = time.monotonic() - wall_before
    cpu_after = server.cpu_times()
    rss_after = server.memory_info().rss
    pairs = np.concatenate([np.load(out) for out in outs], axis=1)
    latencies = pairs[1] * 1000.0
    # Does the server keep up? Compare the first and the last third of the sending period.
    order = np.argsort(pairs[0])
    thirds = np.array_split(latencies[order], 3) if len(latencies) >= 3 else [latencies] * 3
    sent = sum(r["sent"] for r in results)
    connected = sum(r["connected"] for r in results)
    received = sum(r["received"] for r in results)
    refused = {}
    for r in results:
        for code, count in r["refused"].items():
            refused[code] = refused.get(code, 0) + count
    accepted = sent - sum(refused.values())
    expected = accepted * connected
    return {
        "name": name, "connected": connected, "sent": sent, "accepted": accepted, "refused": refused,
        "received": received, "lost": expected - received,
        "p50": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
        "p99": float(np.percentile(latencies, 99)) if len(latencies) else float("nan"),
        "max": float(latencies.max()) if len(latencies) else float("nan"),
        "p50_first": float(np.percentile(thirds[0], 50)) if len(thirds[0]) else float("nan"),
        "p50_last": float(np.percentile(thirds[-1], 50)) if len(thirds[-1]) else float("nan"),
        "deliveries_per_s": received / seconds,
        "cpu_cores": ((cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)) / wall,
        # Robust to machine load (CPU time, not wall time): what each delivery costs the server.
        "cpu_us_per_delivery": ((cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system))
        / max(received, 1) * 1e6,
        "load_avg": os.getloadavg()[0],
        "rss_mb": rss_after / 2**20, "rss_growth_mb": (rss_joined - rss_before) / 2**20, "connect_s": connect_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--scale-out", action="store_true", help="PostgreSQL + Redis instead of SQLite")
    parser.add_argument("--profile", metavar="PATH", help="run clipfeed's server under cProfile, stats to PATH")
    parser.add_argument("--no-baseline", action="store_true", help="skip the bare websockets round")
    parser.add_argument("--clients-proc", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        run_baseline_server(args.baseline_server)
        return
    if args.clients_proc:
        spec = json.loads(Path(args.clients_proc[0]).read_text())
        try:
            import uvloop
            uvloop.install()
        except ImportError:
            pass
        asyncio.run(run_clients(spec["url"], spec["tokens"], spec["senders"], spec["interval"], spec["seconds"],
                                args.clients_proc[1]))
        return

    interval = 10.0 / 5 * 1.025
    workdir = Path(tempfile.mkdtemp(prefix="clipfeed-bench-chat-"))
    for name in ("baseline", "clipfeed"):
        (workdir / name).mkdir()

    # Baseline: the bare websockets fan-out server.
    base = None
    if not args.no_baseline:
        port = free_port()
        baseline = subprocess.Popen([sys.executable, __file__, "--baseline-server", str(port)],
                                    stdout=subprocess.PIPE, text=True)
        assert baseline.stdout.readline().startswith("READY")
        try:
            base = run_round("baseline", f"ws://127.0.0.1:{port}/", ["sender"] * args.senders, args.clients,
                             interval, args.seconds, args.client_procs, baseline.pid, workdir)
        finally:
            baseline.terminate()
            baseline.wait()

    env = {"CLIPFEED_RTMP_PORT": str(free_port())}
    if args.scale_out:
        import uuid

        import asyncpg

        schema = f"bench_chat_{uuid.uuid4().hex[:8]}"

        async def mkschema():
            conn = await asyncpg.connect(PG_URL)
            await conn.execute(f'CREATE SCHEMA "{schema}"')
            await conn.close()

        asyncio.run(mkschema())
        env.update(CLIPFEED_DATABASE_URL=PG_URL, CLIPFEED_DATABASE_SCHEMA=schema, CLIPFEED_REDIS_URL=REDIS_URL,
                   CLIPFEED_QUEUE_NAME=schema)
    data_dir = workdir / "data"
    data_dir.mkdir()
    server = ServerProcess(data_dir, workers=False, extra_env=env, profile_to=args.profile)
    try:
        owner = register(server.url, "benchowner")
        import httpx

        stream = httpx.post(f"{server.url}/api/v1/live/start", json={"title": "bench"},
                            headers={"Authorization": f"Bearer {owner}"}).json()
        sender_tokens = [register(server.url, f"benchsender{n}") for n in range(args.senders)]
        ws_url = server.url.replace("http://", "ws://") + f"/api/v1/live/{stream['stream_id']}/chat"
        ours = run_round("clipfeed", ws_url, sender_tokens, args.clients, interval, args.seconds, args.client_procs,
                         server.proc.pid, workdir)
    finally:
        server.stop()
        if args.scale_out:
            async def dropschema():
                conn = await asyncpg.connect(PG_URL)
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                await conn.close()

            asyncio.run(dropschema())

    rate = args.senders / interval
    shape = "PostgreSQL + Redis" if args.scale_out else "SQLite, in-process fan-out"
    if base is None:
        base = {key: float("nan") if isinstance(value, float) else "-" for key, value in ours.items()}

    def cells(key, fmt="{:.1f}"):
        return [fmt.format(ours[key]), fmt.format(base[key])]

    print_table(f"live chat: {args.clients} clients, {args.senders} senders at the limit "
                f"({rate:.1f} msg/s), {args.seconds:.0f} s, {shape}",
                ["metric", "clipfeed", "bare websockets fan-out"], [
                    ["clients connected", *cells("connected", "{}")],
                    ["join time, all clients (s)", *cells("connect_s")],
                    ["messages accepted / sent", f"{ours['accepted']}/{ours['sent']}", f"{base['accepted']}/{base['sent']}"],
                    ["deliveries received", *cells("received", "{}")],
                    ["lost", *cells("lost", "{}")],
                    ["delivery p50 (ms)", *cells("p50")],
                    ["delivery p99 (ms)", *cells("p99")],
                    ["delivery max (ms)", *cells("max")],
                    ["p50, first third of the run (ms)", *cells("p50_first")],
                    ["p50, last third of the run (ms)", *cells("p50_last")],
                    ["deliveries / s", *cells("deliveries_per_s", "{:.0f}")],
                    ["server CPU while sending (cores)", *cells("cpu_cores", "{:.2f}")],
                    ["server CPU per delivery (µs)", *cells("cpu_us_per_delivery")],
                    ["machine load average (1 min, end of round)", *cells("load_avg", "{:.1f}")],
                    ["server RSS at end (MB)", *cells("rss_mb", "{:.0f}")],
                    ["server RSS growth joining (MB)", *cells("rss_growth_mb", "{:.0f}")],
                ])
    ratio = ours["p99"] / base["p99"] if base["p99"] > 0 else float("nan")
    print_table("goals", ["metric", "measured", "goal"], [
        ["p99 delivery latency", f"{ours['p99']:.1f} ms", f"<= {GOAL_P99_MS:.0f} ms"],
        ["lost messages", str(ours["lost"]), "0"],
        ["p99 vs bare websockets fan-out", f"{ratio:.2f}x", "(reported)"],
        ["refused by the server", json.dumps(ours["refused"]), "none at the limit"],
    ])


if __name__ == "__main__":
    main()
