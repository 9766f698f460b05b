"""Manual check, not collected by pytest: `prepare-data --executor ray` gives the local executor's output.

Ray is not a test dependency (an 80 MB wheel, and a local Ray cluster takes minutes to run the 7 sources' stages on
2 cores), so CI does not run this. With Ray installed (`pip install "datatrove[ray]"`):

    python tests/training/check_ray_executor.py /tmp/ray-check

It prepares the shipped 7-source sample once with the local executor and once on a local Ray cluster
(`ray.init(num_cpus=2)`), both with 2 tasks, and exits non-zero unless every source's kept documents, dropped ids
and token-shard bytes are equal.
"""

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.training.test_data_pipeline import _outputs, sample_copy  # noqa: E402
from training.data.pipeline.config import load_data_config  # noqa: E402
from training.data.pipeline.executors import ExecutorOptions  # noqa: E402
from training.data.pipeline.prepare import prepare_data  # noqa: E402


def main(workdir: Path) -> int:
    """Run both executors under `workdir` and compare; 0 when the outputs are equal."""
    import ray

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    config = load_data_config(sample_copy(workdir) / "sample.yaml")
    started = time.perf_counter()
    prepare_data(config, workdir / "local", tasks=2)
    local_s = time.perf_counter() - started
    ray.init(num_cpus=2, include_dashboard=False)
    started = time.perf_counter()
    prepare_data(config, workdir / "ray", ExecutorOptions(kind="ray", workers=2), tasks=2)
    ray_s = time.perf_counter() - started
    sources = sorted(p.name for p in (workdir / "local" / "docs").iterdir())
    local, on_ray = _outputs(workdir / "local", sources), _outputs(workdir / "ray", sources)
    for source in sources:
        print(f"{source}: {len(local[source]['docs'])} kept locally, {len(on_ray[source]['docs'])} on Ray, "
              f"equal: {local[source] == on_ray[source]}")
    print(f"local {local_s:.1f} s, Ray {ray_s:.1f} s; ray {ray.__version__}")
    return 0 if local == on_ray else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ray-check")))
