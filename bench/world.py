"""The built-in world's figures, as one JSON line: the match rates of the shipped weights over N evaluation prompts
(alternately seen and held-out combinations, `world.evaluation_prompts`), the sampling time per clip, and each
shipped model's parameter count, bytes on disk and training record (from `world.json`).

    python bench/world.py                 # 48 prompts, every shipped system
    WORLD_PROMPTS=40 python bench/world.py

The match rate is the checker's (`shapes.score_clip`): colour, shape and direction all read back from the pixels
as the prompt says. Load average at the start and the end is recorded; timings count only on a quiet machine.
"""
import json
import os
import resource
import sys
import tempfile
import time


def main() -> dict:
    from opensora_nb import world
    n = int(os.environ.get("WORLD_PROMPTS", "48"))
    load0 = os.getloadavg()
    systems = world.shipped_systems()
    if not systems:
        raise SystemExit("no world weights shipped (opensora_nb/world_weights): build them with `make world`")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        r = world.run_world_demo(out, num_prompts=n, systems=systems, progress_bar=False)
    info = world.world_info()
    line = dict(bench="world", prompts=n, wall_s=round(time.perf_counter() - t0, 1),
                peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                load_start=[round(x, 2) for x in load0], load_end=[round(x, 2) for x in os.getloadavg()])
    for s in systems:
        line[s] = dict(seen=r[s]["seen"], held_out=r[s]["held_out"], seconds_per_clip=r[s]["seconds_per_clip"],
                       models={k: v for k, v in info[s].items() if isinstance(v, dict) and "params" in v})
    line["t5"] = info.get("t5")
    return line


if __name__ == "__main__":
    print(json.dumps(main()))
    sys.stdout.flush()
