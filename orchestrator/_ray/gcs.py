"""Calls to a cluster's GCS through Ray's own channel (its token interceptor and TLS settings), before or beside the
Ray this process runs (private Ray APIs, checked by ``orchestrator._ray.check``)."""
from __future__ import annotations


def _cluster_id(address: str, *, timeout_s: float) -> bytes:
    """The cluster id the GCS at ``address`` (host:port) answers a GetClusterId call with; Ray's AuthenticationError
    (a token needed and none here), grpc.RpcError or ValueError (an address it cannot dial) when it does not."""
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    channel = init_grpc_channel(address)
    try:
        return gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
            gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s).cluster_id
    finally:
        channel.close()


def gcs_token_refusal(address: str, *, timeout_s: float = 5.0) -> str | None:
    """Why the GCS at ``address`` (host:port) refuses this process's Ray auth token, worded as Ray's Jobs SDK words it
    (``Authentication required``: none sent; ``Authentication failed``: another token; else the token loader's own
    error), or None: it answers, or fails for another reason, which ray.init reports. One GetClusterId call through
    Ray's own channel (its token interceptor and TLS settings): ray.init retried a refused token for 20 s, printing
    a warning line a second from C++, and then raised "Failed to connect"."""
    import grpc
    from ray._private.authentication.authentication_utils import is_token_auth_enabled
    from ray.exceptions import AuthenticationError

    try:
        _cluster_id(address, timeout_s=timeout_s)
    except AuthenticationError as e:   # RAY_AUTH_MODE=token and no token found here
        return str(e)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNAUTHENTICATED:
            return None
        return "Authentication failed" if is_token_auth_enabled() else "Authentication required"
    return None


def same_cluster(address: str, *, timeout_s: float = 5.0) -> bool:
    """Does the GCS at ``address`` (host:port) answer with the cluster id of the Ray this process runs as a driver?
    (False when it does not answer, or this process is a Ray client.) A service name, a NAT or a mapped port that
    reaches the same GCS is the same cluster."""
    import grpc
    import ray._private.worker as ray_worker
    from ray.exceptions import AuthenticationError

    node = ray_worker.global_worker.node
    try:
        return node is not None and _cluster_id(address, timeout_s=timeout_s) == node.cluster_id.binary()
    except (AuthenticationError, grpc.RpcError, ValueError):
        return False


def started_here() -> bool:
    """Did this process start the Ray it runs (``ray.init()`` with no cluster to join: its head node)?"""
    import ray._private.worker as ray_worker

    node = ray_worker.global_worker.node
    return node is not None and bool(getattr(node, "head", False))
