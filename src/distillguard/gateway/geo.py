"""IP address -> country (ISO 3166-1 alpha-2) and ASN, from MaxMind DB files read with `maxminddb`.

Any database in the MaxMind DB format works: MaxMind GeoLite2 / GeoIP2 (Country or City, and ASN) and
DB-IP Lite (country-lite or city-lite, and asn-lite). The country and the ASN come from two separate
files (`GeoConfig.country_db`, `asn_db`); either may be left out. The bundled test databases
(`bundled_dbs()`, built by `geo_build.py`) map only loopback and documentation ranges to made-up
countries and ASNs.

`jurisdiction_error` applies the policy: the global `denied_countries`, the tier's `jurisdictions`
(allowed countries, empty = any), and optionally hosting / VPN ASNs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import maxminddb

from distillguard.gateway.config import GeoConfig, TierConfig
from distillguard.gateway.errors import GatewayError, forbidden
from distillguard.gateway.geo_build import ASN_FILE, COUNTRY_FILE


def bundled_dbs() -> tuple[Path, Path]:
    """(country, asn) paths of the small test/demo databases shipped in `distillguard/data/geo/`."""
    base = Path(str(resources.files("distillguard") / "data" / "geo"))
    return base / COUNTRY_FILE, base / ASN_FILE


@dataclass(frozen=True, slots=True)
class GeoInfo:
    country: str | None = None
    asn: int | None = None
    as_org: str | None = None
    hosting: bool = False
    vpn: bool = False


_NONE = GeoInfo()


def _country(rec: Any) -> str | None:
    if not isinstance(rec, dict):
        return None
    # GeoLite2/DB-IP: `country`; an address with only a registration (anycast, satellite): `registered_country`
    for k in ("country", "registered_country"):
        c = rec.get(k)
        if isinstance(c, dict) and isinstance(c.get("iso_code"), str):
            return str(c["iso_code"]).upper()
    return None


class GeoResolver:
    """Lookups with an in-memory LRU cache; the files are memory-mapped (MODE_AUTO)."""

    def __init__(self, cfg: GeoConfig) -> None:
        self.cfg = cfg
        self._country = maxminddb.open_database(str(cfg.country_db)) if cfg.country_db else None
        self._asn = maxminddb.open_database(str(cfg.asn_db)) if cfg.asn_db else None
        self._hosting = frozenset(cfg.hosting_asns)
        self._vpn = frozenset(cfg.vpn_asns)
        self._denied = frozenset(cfg.denied_countries)
        self.lookup = lru_cache(maxsize=cfg.cache_size)(self._lookup)

    def close(self) -> None:
        for r in (self._country, self._asn):
            if r is not None:
                r.close()

    def _lookup(self, ip: str | None) -> GeoInfo:
        if not ip:
            return _NONE
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return _NONE
        country = _country(self._country.get(addr)) if self._country is not None else None
        asn: int | None = None
        org: str | None = None
        if self._asn is not None:
            rec = self._asn.get(addr)
            if isinstance(rec, dict):
                n = rec.get("autonomous_system_number")
                asn = n if isinstance(n, int) else None
                o = rec.get("autonomous_system_organization")
                org = o if isinstance(o, str) else None
        return GeoInfo(country, asn, org, asn in self._hosting, asn in self._vpn)

    def jurisdiction_error(self, info: GeoInfo, tier_name: str, tier: TierConfig) -> GatewayError | None:
        """The 403 (code `jurisdiction`) this request gets, or None when the policy admits it."""
        c = info.country
        where = f"country {c}" if c else "an unknown country"
        if c is not None and c in self._denied:
            return _refuse(f"Requests from {where} are not supported (jurisdiction: denied country).")
        allowed = c in tier.jurisdictions if c else self.cfg.allow_unknown_country
        if tier.jurisdictions and not allowed:
            return _refuse(
                f"Requests from {where} are not allowed for tier {tier_name!r} "
                f"(jurisdiction: allowed {', '.join(tier.jurisdictions)})."
            )
        if info.hosting and self.cfg.refuse_hosting:
            return _refuse(f"Requests from hosting networks (AS{info.asn}) are not allowed (jurisdiction).")
        if info.vpn and self.cfg.refuse_vpn:
            return _refuse(f"Requests through VPN networks (AS{info.asn}) are not allowed (jurisdiction).")
        return None


def _refuse(message: str) -> GatewayError:
    return forbidden(message, code="jurisdiction")


def record_geo(rec: dict[str, Any], info: GeoInfo) -> None:
    """Put the lookup into an exchange record (`country`, `asn`, flags in `attributes`)."""
    if info.country:
        rec["country"] = info.country
    if info.asn is not None:
        rec["asn"] = info.asn
    a = rec["attributes"]
    if info.as_org:
        a["geo.as_org"] = info.as_org
    if info.hosting:
        a["geo.hosting"] = "true"
    if info.vpn:
        a["geo.vpn"] = "true"
