"""Calls to a cluster's GCS through Ray's own channel (its token interceptor and TLS settings), before or beside the
Ray this process runs (private Ray APIs, checked by ``orchestrator._ray.check``)."""
from __future__ import annotations


def gcs_token_refusal(address: str, *, timeout_s: float = 5.0) -> str | None:
    """Why the GCS at ``address`` (host:port) refuses this process's Ray auth token, worded as Ray's Jobs SDK words it
    (``Authentication required``: none sent; ``Authentication failed``: another token; else the token loader's own
    error), or None: it answers, or fails for another reason, which ray.init reports. One GetClusterId call through
    Ray's own channel (its token interceptor and TLS settings): ray.init retried a refused token for 20 s, printing
    a warning line a second from C++, and then raised "Failed to connect"."""
    import grpc
    from ray._private.authentication.authentication_utils import is_token_auth_enabled
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    from ray.exceptions import AuthenticationError

    try:
        channel = init_grpc_channel(address)
        try:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s)
        finally:
            channel.close()
    except AuthenticationError as e:   # RAY_AUTH_MODE=token and no token found here
        return str(e)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNAUTHENTICATED:
            return None
        return "Authentication failed" if is_token_auth_enabled() else "Authentication required"
    return None


def same_cluster(address: str, *, timeout_s: float = 5.0) -> bool:
    """Does the GCS at ``address`` (host:port) answer with the cluster id of the Ray this process runs? (False when it
    does not answer.) One GetClusterId call, as ``gcs_token_refusal``: a service name, a NAT or a mapped port that
    reaches the same GCS is the same cluster."""
    import grpc
    import ray._private.worker as ray_worker
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    from ray.exceptions import AuthenticationError

    try:
        channel = init_grpc_channel(address)
        try:
            reply = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s)
        finally:
            channel.close()
    except (AuthenticationError, grpc.RpcError, ValueError):
        return False
    return reply.cluster_id == ray_worker.global_worker.node.cluster_id.binary()
