"""Build the small test/demo geo databases (MaxMind DB format) from a documented table.

The table maps only loopback and documentation ranges (RFC 1122, RFC 5737, RFC 3849) to made-up
countries (ISO 3166-1 user-assigned codes `XA`..`XZ`, which no real country has) and documentation AS
numbers (RFC 5398: 64496-64511). The result is two files in the layout of GeoLite2 / DB-IP Lite:

- `test-country.mmdb`: `{"country": {"iso_code", "names": {"en"}}}` (as GeoLite2-Country / DB-IP
  country-lite);
- `test-asn.mmdb`: `{"autonomous_system_number", "autonomous_system_organization"}` (as GeoLite2-ASN /
  DB-IP asn-lite).

Writing needs `mmdb-writer` (a development dependency); reading needs only `maxminddb`. The built files
ship in `distillguard/data/geo/` (a few hundred bytes); rebuild them with
`python -m distillguard.gateway.geo_build [OUTDIR]`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

COUNTRY_FILE = "test-country.mmdb"
ASN_FILE = "test-asn.mmdb"


class GeoRow(NamedTuple):
    network: str
    country: str
    country_name: str
    asn: int
    as_org: str


# network, country, country name, ASN, AS organisation. All made up; see the module docstring.
TEST_TABLE: tuple[GeoRow, ...] = (
    GeoRow("127.0.0.0/8", "XL", "Loopbackland", 64496, "Loopback Test Network"),
    GeoRow("::1/128", "XL", "Loopbackland", 64496, "Loopback Test Network"),
    GeoRow("192.0.2.0/24", "XA", "Testland A", 64497, "Example Residential ISP"),  # TEST-NET-1
    GeoRow("198.51.100.0/24", "XB", "Testland B", 64498, "Example Hosting Ltd"),  # TEST-NET-2
    GeoRow("203.0.113.0/25", "XC", "Testland C", 64499, "Example VPN Service"),  # TEST-NET-3, low half
    GeoRow("203.0.113.128/25", "XD", "Testland D", 64500, "Example Mobile Carrier"),  # high half
    GeoRow("2001:db8::/33", "XA", "Testland A", 64497, "Example Residential ISP"),  # IPv6 documentation
    GeoRow("2001:db8:8000::/33", "XB", "Testland B", 64498, "Example Hosting Ltd"),
)
# Which of the made-up ASNs play hosting and VPN providers in the tests and the demo config.
TEST_HOSTING_ASNS = (64498,)
TEST_VPN_ASNS = (64499,)


def build(outdir: Path, table: tuple[GeoRow, ...] = TEST_TABLE) -> tuple[Path, Path]:
    """Write the country and ASN databases for `table` into `outdir`; returns their paths."""
    from mmdb_writer import MmdbU32, MMDBWriter  # dev dependency: imported only when building
    from netaddr import IPSet

    outdir.mkdir(parents=True, exist_ok=True)
    country = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="distillguard-Test-Country",
        languages=["en"],
        description={"en": "distillguard test countries (documentation ranges only, made-up codes)"},
    )
    asn = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="distillguard-Test-ASN",
        languages=["en"],
        description={"en": "distillguard test ASNs (documentation ranges only, RFC 5398 numbers)"},
    )
    for row in table:
        net = IPSet([row.network])
        country.insert_network(net, {"country": {"iso_code": row.country, "names": {"en": row.country_name}}})
        asn.insert_network(
            net,
            {"autonomous_system_number": MmdbU32(row.asn), "autonomous_system_organization": row.as_org},
        )
    cpath, apath = outdir / COUNTRY_FILE, outdir / ASN_FILE
    country.to_db_file(str(cpath))
    asn.to_db_file(str(apath))
    return cpath, apath


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(__file__).resolve().parent.parent / "data" / "geo"
    for p in build(out):
        print(f"{p} ({p.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
