"""Run order: the slowest files first. `make test` runs pytest on two workers (pytest-xdist, `--dist loadfile`:
a file is one unit of work), handed out in collection order; starting the long files first keeps one worker from
being left with a long file at the end while the other sits idle. Without xdist the order changes nothing."""
from pathlib import Path

# by their time on 2 quiet cores (pytest --durations), longest first; the files not listed follow, as collected
SLOWEST_FIRST = ("test_graph_mode.py", "test_train_vae.py", "test_pipelines.py", "test_train.py", "test_causalvae.py",
                 "test_shapes.py", "test_demo.py", "test_docs.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))   # stable: a file keeps its order
