"""tc shaping per tenant port, for real, on lo inside a namespace the test
creates: HTB egress by source port, ingress by destination port via ifb."""
import secrets

import pytest

from rustymt.host.tc import DEFAULT_MINOR, Shaper
from tests.host.conftest import tcp_rate

pytestmark = pytest.mark.host


def free_ports():
    base = 20000 + secrets.randbelow(20000)
    return base, base + 1


def test_tenant_port_is_shaped_both_ways_and_other_ports_are_not(netns_name):
    shaped, other = free_ports()
    with Shaper("lo", netns=netns_name) as shaper:
        shaper.setup()
        shaper.set_port(shaped, 20)
        rates = {(port, direction): tcp_rate(netns_name, direction, port)
                 for port in (shaped, other) for direction in ("from", "to")}
        counters = shaper.counters()
    print("\n" + ", ".join(f"port {'tenant' if p == shaped else 'other'} {d}: {r:.1f} Mbit/s" for (p, d), r in rates.items()))
    assert 18.0 <= rates[(shaped, "from")] <= 22.0    # egress, by source port
    assert 18.0 <= rates[(shaped, "to")] <= 22.0      # ingress via ifb, by destination port
    assert rates[(other, "from")] > 200 and rates[(other, "to")] > 200
    for direction in ("egress", "ingress"):
        tenant = counters[shaped][direction]
        assert tenant.rate_bps == 20_000_000
        assert tenant.bytes > 2_000_000 and tenant.packets > 0 and tenant.overlimits > 0
        assert counters[DEFAULT_MINOR][direction].bytes > tenant.bytes


def test_setup_and_set_port_are_idempotent_and_remove_cleans_up(netns_name):
    port, _ = free_ports()
    with Shaper("lo", netns=netns_name) as shaper:
        for _ in range(2):
            shaper.setup()
            shaper.set_port(port, 10)
        shaper.set_port(port, 12.5)
        shaper.set_port(port + 1, 3)
        assert shaper.ports() == {port: {"egress": 12_500_000, "ingress": 12_500_000},
                                  port + 1: {"egress": 3_000_000, "ingress": 3_000_000}}
        assert shaper.filtered_ports() == {port: {"egress", "ingress"}, port + 1: {"egress", "ingress"}}
        assert shaper.remove_port(port + 1) is True
        assert shaper.filtered_ports() == {port: {"egress", "ingress"}}   # the other port's filters stay
        assert shaper.remove_port(port) is True
        assert shaper.remove_port(port) is False
        assert shaper.ports() == {} and shaper.filtered_ports() == {}
        shaper.teardown()
        assert shaper.ipr.link_lookup(ifname=shaper.ifb) == []
        assert not any(q.get_attr("TCA_KIND") == "htb" for q in shaper.ipr.get_qdiscs(index=shaper.index))
