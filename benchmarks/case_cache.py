"""Epoch time of streamed loading (--load_all=0) with and without cache_cases, and the cache's hit rate.

Serves the training cases of a sweep exactly as the training loop does (the same seeded per-epoch shuffle,
batches, DataLoader and workers), without the network, so the time is the loading's own. Before every
epoch the sweep file is dropped from the page cache (posix_fadvise DONTNEED), as for a sweep larger than
memory, where every read of a case not cached by the tool goes to the disk. Also prints the hit rate a
least-recently-used cache of the same size would have had on the same order of reads (simulated).

    python benchmarks/case_cache.py --sweep ../shared/sweeps/front-dev [--share 0.9] [--epochs 4] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import List

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sweep_runs import condition_text, open_sweep_folder, table  # noqa: E402
from modules.config.legacy_files import load_run_config  # noqa: E402
from modules.data.prepared_sweep import prepare_sweep  # noqa: E402
from modules.runtime import memory  # noqa: E402
from modules.runtime.distributed import Runtime  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def epoch_orders(num_cases: int, epochs: int, seed: int) -> List[List[int]]:
    sampler = Runtime(torch.device("cpu")).sampler(range(num_cases), shuffle=True, seed=seed)
    orders = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    return orders


def lru_hit_rate(orders: List[List[int]], capacity: int) -> float:
    cache: "OrderedDict[int, None]" = OrderedDict()
    hits = reads = 0
    for order in orders:
        for position in order:
            reads += 1
            if position in cache:
                hits += 1
                cache.move_to_end(position)
            else:
                cache[position] = None
                if len(cache) > capacity:
                    cache.popitem(last=False)
    return hits / reads


def timed_epochs(config, work: Path, epochs: int, batch: int, seed: int):
    sweep = prepare_sweep(config, work)
    dataset = sweep.train_set
    orders = epoch_orders(len(dataset), epochs, seed)
    seconds = []
    for order in orders:
        drop_from_page_cache(sweep.path)
        batches = [order[i:i + batch] for i in range(0, len(order), batch)]
        started = time.perf_counter()
        for _ in DataLoader(dataset, batch_sampler=batches, num_workers=config.data.num_workers):
            pass
        seconds.append(time.perf_counter() - started)
    return seconds, dataset.cache, orders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", required=True)
    parser.add_argument("--share", type=float, default=0.9, help="cache_cases as a share of the training cases")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cache_"))
    sweep = open_sweep_folder(args.sweep, work)
    (work / "preset.txt").write_text((REPO / "preset.txt").read_text())
    rows = [["cache_cases", "epoch 1 s", "later epochs s (mean)", "hit rate, epochs 2+", "LRU of that size (simulated)"]]
    num_train = None
    for label in ("off", "on"):
        condition = work / f"condition_{label}.txt"
        # The cache serves only a VAE that trains on the full fields (coefficients are read once).
        keys = {"num_workers": str(args.workers), "pod_projected_training": "0"}
        if label == "on":
            keys["cache_cases"] = str(int(args.share * num_train))
        condition.write_text(condition_text(sweep, keys=keys))
        config, _ = load_run_config(work / "preset.txt", condition, cli_values={"data.load_all": ("--load_all", False)})
        seconds, cache, orders = timed_epochs(config, work, args.epochs, config.train.batch_size, config.train.seed)
        num_train = len(orders[0])
        if cache is None:
            rows.append(["0", f"{seconds[0]:.2f}", f"{sum(seconds[1:]) / len(seconds[1:]):.2f}", "-", "-"])
            continue
        later_reads = int(cache.reads.sum()) - num_train
        later_hits = later_reads - (int(cache.misses.sum()) - num_train)
        lru = lru_hit_rate(orders, cache.slots)
        rows.append([f"{cache.slots} ({cache.slots / num_train:.0%})", f"{seconds[0]:.2f}",
                     f"{sum(seconds[1:]) / len(seconds[1:]):.2f}", f"{later_hits / later_reads:.1%}",
                     f"{lru * args.epochs / (args.epochs - 1):.1%}"])  # epoch 1 reads all miss
    print(f"{sweep.name}: {num_train} training cases of {sweep.shape}, {args.workers} DataLoader workers, batch "
          f"{config.train.batch_size}, file dropped from the page cache before every epoch "
          f"({memory.CASE_CACHE_HOST_SHARE:.0%} of free memory allowed to the cache)")
    print(table(rows))


if __name__ == "__main__":
    main()
