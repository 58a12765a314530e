"""Ray job entrypoint: `orchestrator train` on the cluster, i.e. one training run (Ray Train).

    ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/train.py experiment.yaml

On a cluster with token auth, `export RAY_AUTH_MODE=token` first (see cluster.yaml);
`orchestrator submit` does the same from Python. The job's cwd is the uploaded working dir, but
`python jobs/train.py` puts only jobs/ on sys.path: add the project root first, so the uploaded code
wins over any installed copy of the package.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["train", "--in-ray-job", *sys.argv[1:]])
