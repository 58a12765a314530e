"""One cluster, several jobs: what a sweep cleans up is its own (slow: real Ray, a second driver process)."""
import os
import subprocess
import sys

import pytest

from factories import wait_until

pytestmark = pytest.mark.slow

OTHER_JOB = """
import sys, ray
from ray.util.placement_group import placement_group

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)


@ray.remote(num_cpus=0)
class GroupMaker:
    def make(self):
        pg = placement_group([{"CPU": 0.25}])
        ray.get(pg.ready())
        return pg.id.hex()


maker = GroupMaker.remote()
group = ray.get(maker.make.remote())
ray.kill(maker)                       # its group is now an orphan of this job, as a killed Train controller's is
print(group, flush=True)
sys.stdin.read()                      # the job lives until the test closes stdin
"""


def test_placement_group_cleanup_leaves_other_jobs_groups(ray_session):
    """Another job's group whose creator is dead is that job's business: its own cleanup (or its end) releases it."""
    import ray
    from ray.util.placement_group import placement_group_table

    from orchestrator.training.progress import release_orphaned_placement_groups
    from factories import dead_creator_group, group_maker

    other = subprocess.Popen([sys.executable, "-c", OTHER_JOB, ray.get_runtime_context().gcs_address],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "RAY_AUTH_MODE": "token"})
    try:
        group = other.stdout.readline().strip()
        assert group, "the other job made no group"
        wait_until(lambda: dead_creator_group(group), timeout_s=30, what="Ray reports the other job's creator dead")
        # An orphan of this job too, as an earlier test's stopped trials can leave (CI saw one at 3ae8b58).
        maker = group_maker(num_cpus=0).remote()
        ours = ray.get(maker.make.remote())
        ray.kill(maker)
        wait_until(lambda: dead_creator_group(ours), timeout_s=30, what="Ray reports this job's creator dead")
        released = release_orphaned_placement_groups()   # with any orphan an earlier test of the session left
        assert ours in released and group not in released     # this job's, not the other's
        assert placement_group_table()[ours]["state"] == "REMOVED"
        assert placement_group_table()[group]["state"] == "CREATED"
    finally:
        other.stdin.close()
        other.wait(timeout=60)
