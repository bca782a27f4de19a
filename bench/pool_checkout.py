"""What `pool_pre_ping` costs: short transactions per second on one thread, with and without it, on PostgreSQL.

Each transaction is what a request's smallest unit of work is: check a connection out, BEGIN, one primary-key
SELECT, COMMIT, give it back. The ping is one more round trip at every checkout. Needs PostgreSQL on loopback.

    .venv/bin/python bench/pool_checkout.py [--transactions 1000] [--reps 15]

The two alternate, rep by rep, and the medians are compared: on a shared machine the load drifts between reps.
"""

import argparse
import statistics
import time

import sqlalchemy as sa
from support import PG


def rate(pre_ping: bool, transactions: int) -> float:
    """Transactions per second through a pooled engine."""
    engine = sa.create_engine(f"{PG}/postgres", pool_pre_ping=pre_ping, pool_size=1)
    query = sa.text("SELECT oid FROM pg_database WHERE datname = 'postgres'")
    with engine.begin() as conn:  # warm: the connection is open before timing
        conn.execute(query)
    start = time.perf_counter()
    for _ in range(transactions):
        with engine.begin() as conn:
            conn.execute(query).scalar()
    elapsed = time.perf_counter() - start
    engine.dispose()
    return transactions / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    rates = {True: [], False: []}
    for _ in range(args.reps):
        for pre_ping in (True, False):
            rates[pre_ping].append(rate(pre_ping, args.transactions))
    with_ping, without = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"median of {args.reps} reps: pre_ping {with_ping:6.0f}/s ({1e6 / with_ping:4.0f} µs each), "
          f"no pre_ping {without:6.0f}/s ({1e6 / without:4.0f} µs each): "
          f"the ping costs {1e6 / with_ping - 1e6 / without:3.0f} µs a checkout")


if __name__ == "__main__":
    main()
