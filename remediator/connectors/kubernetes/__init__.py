"""Kubernetes connector: the cluster-side building blocks of remediations.

Each action is a keyword-only async function taking a :class:`KubeClient` first,
naming its exact target, carrying a resourceVersion precondition and a ``dry_run``
flag (server-side ``dryRun=All``), and returning a frozen result for the journal.
Vendor errors arrive mapped to :mod:`remediator.connectors.kubernetes.errors`.
"""

from remediator.connectors.kubernetes.bluegreen import (
    EndpointsReadiness,
    SelectorSwitch,
    endpoints_ready_for,
    switch_service_selector,
    wait_endpoints_ready_for,
)
from remediator.connectors.kubernetes.canary import (
    PRE_CANARY_REPLICAS,
    CanaryWeights,
    pre_canary_replicas,
    set_canary_weight_zero,
)
from remediator.connectors.kubernetes.client import KubeClient, connect
from remediator.connectors.kubernetes.configmaps import (
    ConfigMapRestore,
    ConfigMapSnapshot,
    restore_configmaps,
    snapshot_configmaps,
)
from remediator.connectors.kubernetes.errors import (
    ActionRefused,
    KubeAlreadyExists,
    KubeConflict,
    KubeError,
    KubeNotFound,
    KubeUnavailable,
    LeaseHeld,
    LeaseLost,
)
from remediator.connectors.kubernetes.lease import LeaseGrant, ServiceLease
from remediator.connectors.kubernetes.rollout import (
    RolloutRestartResult,
    RolloutUndoResult,
    rollout_restart,
    rollout_undo,
)
from remediator.connectors.kubernetes.scale import (
    KubernetesFacts,
    ScaleResult,
    ScaleUpResult,
    current_replicas,
    scale,
    scale_up,
)
from remediator.connectors.kubernetes.status import (
    RolloutStatus,
    rollout_status,
    wait_for_rollout,
)

__all__ = [
    "PRE_CANARY_REPLICAS",
    "ActionRefused",
    "CanaryWeights",
    "ConfigMapRestore",
    "ConfigMapSnapshot",
    "EndpointsReadiness",
    "KubeAlreadyExists",
    "KubeClient",
    "KubeConflict",
    "KubeError",
    "KubeNotFound",
    "KubeUnavailable",
    "KubernetesFacts",
    "LeaseGrant",
    "LeaseHeld",
    "LeaseLost",
    "RolloutRestartResult",
    "RolloutStatus",
    "RolloutUndoResult",
    "ScaleResult",
    "ScaleUpResult",
    "SelectorSwitch",
    "ServiceLease",
    "connect",
    "current_replicas",
    "endpoints_ready_for",
    "pre_canary_replicas",
    "restore_configmaps",
    "rollout_restart",
    "rollout_status",
    "rollout_undo",
    "scale",
    "scale_up",
    "set_canary_weight_zero",
    "snapshot_configmaps",
    "switch_service_selector",
    "wait_endpoints_ready_for",
    "wait_for_rollout",
]
