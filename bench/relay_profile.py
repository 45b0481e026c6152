"""Where crud-relay's time goes under insert load: its CPU per change event, and a profile.

The relay runs in this process (a thread) against the benchmark stack while pgbench inserts
into the generated table with N clients; the relay thread's CPU time divided by the events
it wrote is the cost per event. With --profile the run is under cProfile and the functions
with the most own time are printed (the profiler roughly doubles the cost). Run as root:
sudo .venv/bin/python bench/relay_profile.py [--clients 4] [--seconds 10] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from stack import running_stack

from protoc_gen_crud.relay.service import Config, Relay


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    for run in range(1, args.runs + 1):
        with running_stack(start_relay=False) as stack, \
                tempfile.TemporaryDirectory(prefix="crud-bench-") as folder:
            config = Config.load(stack.generated / "relay" / "relay.json",
                                 stack.pg.dsn(stack.database, "crud_relay"), stack.redis.url)
            relay = Relay(config)
            profile = cProfile.Profile() if args.profile else None
            cpu: list[float] = []

            def body(relay: Relay = relay, profile: cProfile.Profile | None = profile,
                     cpu: list[float] = cpu) -> None:
                start = time.thread_time()
                if profile is not None:
                    profile.runcall(relay.run)
                else:
                    relay.run()
                cpu.append(time.thread_time() - start)

            thread = threading.Thread(target=body)
            thread.start()
            time.sleep(2)
            script = Path(folder) / "insert.sql"
            script.write_text("INSERT INTO reading (device_id, value, note) "
                              "VALUES ('dev-' || :client_id, random() * 100, 'bench');\n")
            done = subprocess.run(
                [str(stack.pg.bin / "pgbench"), "-n", "-f", str(script), "-c",
                 str(args.clients), "-j", str(min(args.clients, 2)), "-T", str(args.seconds),
                 "-h", "127.0.0.1", "-p", str(stack.pg.port), "-U", "postgres",
                 stack.database], capture_output=True, text=True, check=True)
            tps = float(re.search(r"tps = ([\d.]+)", done.stdout).group(1))
            time.sleep(2)
            relay.stop()
            thread.join(30)
            events = stack.redis.client().xlen("crud.reading")
            print(f"run {run}: clients={args.clients} inserts/s={tps:.0f} events={events} "
                  f"relay CPU={cpu[0]:.2f}s -> {cpu[0] / events * 1e6:.1f} us/event"
                  + (" (profiled)" if profile else ""))
            if profile is not None:
                pstats.Stats(profile).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
