"""Host enforcement: cgroups (v2 and v1), tc shaping, block-IO throttles,
usage sampling and the reconcile loop. The daemon uses HostController."""
from rustymt.host.cgroupmap import HostQuota
from rustymt.host.controller import HostController
from rustymt.host.reconcile import DesiredState, Repair, TenantSpec

__all__ = ["HostController", "HostQuota", "DesiredState", "Repair", "TenantSpec"]
