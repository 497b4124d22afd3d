"""Where an account's requests come from: an account that sends from a new network every few requests
is rotating through proxies.

A person sends from a handful of networks in a day (home, office, phone, a café); a carrier's NAT moves a
phone between addresses but mostly within a few /24s. A residential or datacentre proxy pool rotated per
request or per few minutes gives an account as many networks as it has bursts of requests: the hydra
operations of the 2026 reports spread each account's traffic over proxy exits so that no address carries
much of it. On its own this is weak (privacy relays and VPN hoppers rotate too); it weighs with what the
account asks for, and it is an account's own evidence when it shares a campaign's addresses.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from distillguard.detect.signals.base import Columns, Finding, ramp, register, safe_div

# The network of an address: its IPv4 /24, or its IPv6 /48 (the first three groups as written; a device's
# IPv6 privacy addresses change daily within its /64, so whole addresses would count one device many times).
# Addresses arrive normalised (`Exchange` writes them as `ipaddress` does: lower case, IPv6 compressed), so
# one address has one spelling; a /48 whose second or third group is zero may still be spelt two ways
# ("2001:db8::" and "2001:db8:0:1::"), which can only count a network twice, never two as one.
NETWORK_SQL = (
    "CASE WHEN client_ip LIKE '%.%' THEN {rxr(client_ip, '\\.[0-9]+$', '')} "
    "ELSE {rxr(client_ip, '^([0-9a-f]*:[0-9a-f]*:[0-9a-f]*):.*$', '\\1')} END"
)


@register
class Network:
    name: ClassVar[str] = "network"
    row_columns: ClassVar[dict[str, str]] = {
        "net_key": f"CASE WHEN client_ip IS NOT NULL THEN {{hash({NETWORK_SQL})}} END",
    }
    extra_sql: ClassVar[str | None] = None
    account_columns: ClassVar[dict[str, str]] = {
        "networks": "count(DISTINCT net_key)",
        "net_rows": "count(net_key)",
    }

    def evaluate(self, cols: Columns) -> list[Finding]:
        nets = np.asarray(cols["networks"], dtype=np.float64)
        # Networks per request: a person's few networks over a day of requests stay far under 0.1; a
        # rotating pool gives a new one every two or three requests.
        churn = safe_div(nets, cols["net_rows"])
        return [
            Finding(
                "network.rotation",
                nets,
                ramp(nets, 5, 10) * ramp(churn, 0.1, 0.3),
                10,
                "requests from {value:.0f} different networks (/24 or /48), a new one every few requests: "
                "rotating proxies",
            )
        ]
