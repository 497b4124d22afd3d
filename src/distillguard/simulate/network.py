"""Where simulated traffic comes from: client IPs, their ASNs and countries, and SDK user agents.

The ASNs are real networks with plausible (not authoritative) address blocks; addresses are drawn inside
them. What matters for detection realism is the *shape*: people sit on one or two residential or office
addresses, companies share NAT egress addresses between accounts, batch jobs run in clouds, and proxy
pools spread one operator over many /24s of a few residential ASNs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Kind = Literal["residential", "business", "cloud", "mobile", "hosting"]


@dataclass(frozen=True)
class Asn:
    asn: int
    name: str
    country: str
    kind: Kind
    prefixes: tuple[tuple[int, int], ...]  # first two octets of /16s the network announces (illustrative)


ASNS: tuple[Asn, ...] = (
    # residential broadband
    Asn(7922, "Comcast", "US", "residential", ((73, 15), (98, 207), (24, 60), (67, 180), (76, 102))),
    Asn(20115, "Charter", "US", "residential", ((47, 145), (66, 168), (97, 91), (174, 102))),
    Asn(7018, "AT&T", "US", "residential", ((99, 100), (107, 194), (108, 220), (12, 74))),
    Asn(701, "Verizon", "US", "residential", ((71, 178), (108, 46), (173, 66), (96, 239))),
    Asn(812, "Rogers", "CA", "residential", ((99, 229), (174, 112), (24, 114))),
    Asn(3320, "Deutsche Telekom", "DE", "residential", ((79, 192), (87, 150), (91, 34), (93, 199))),
    Asn(2856, "BT", "GB", "residential", ((81, 129), (86, 128), (109, 144), (217, 42))),
    Asn(3215, "Orange", "FR", "residential", ((90, 3), (86, 246), (92, 151), (83, 204))),
    Asn(12322, "Free", "FR", "residential", ((82, 64), (88, 120), (78, 198))),
    Asn(1136, "KPN", "NL", "residential", ((77, 165), (84, 24), (145, 53))),
    Asn(3352, "Telefonica", "ES", "residential", ((80, 25), (83, 32), (88, 10))),
    Asn(4713, "NTT OCN", "JP", "residential", ((114, 145), (153, 156), (122, 26))),
    Asn(2516, "KDDI", "JP", "residential", ((106, 128), (111, 86), (182, 250))),
    Asn(4766, "Korea Telecom", "KR", "residential", ((121, 134), (175, 193), (211, 36))),
    Asn(55836, "Reliance Jio", "IN", "mobile", ((49, 36), (157, 32), (152, 58))),
    Asn(24560, "Bharti Airtel", "IN", "residential", ((106, 193), (122, 161), (182, 64))),
    Asn(1221, "Telstra", "AU", "residential", ((101, 160), (110, 142), (124, 171))),
    Asn(26599, "Vivo", "BR", "residential", ((177, 92), (179, 108), (187, 34))),
    Asn(9506, "Singtel", "SG", "residential", ((116, 14), (118, 189), (220, 255))),
    Asn(21928, "T-Mobile US", "US", "mobile", ((172, 56), (172, 58), (100, 48))),
    # business / enterprise transit (office egress)
    Asn(3356, "Lumen", "US", "business", ((4, 14), (8, 18), (63, 146))),
    Asn(174, "Cogent", "US", "business", ((38, 104), (38, 122), (154, 6))),
    Asn(6461, "Zayo", "US", "business", ((64, 125), (208, 185), (216, 200))),
    Asn(3257, "GTT", "DE", "business", ((77, 67), (89, 149), (213, 200))),
    Asn(5089, "Virgin Media Business", "GB", "business", ((62, 30), (82, 10), (86, 2))),
    # clouds (batch jobs, CI runners, SaaS backends)
    Asn(16509, "Amazon", "US", "cloud", ((3, 91), (18, 204), (52, 23), (54, 173), (44, 199))),
    Asn(15169, "Google", "US", "cloud", ((34, 82), (35, 192), (34, 145))),
    Asn(8075, "Microsoft", "US", "cloud", ((20, 42), (40, 76), (52, 151), (13, 64))),
    Asn(14618, "Amazon AES", "US", "cloud", ((3, 208), (34, 196), (54, 90))),
    # hosting / VPS (cheap egress, often used by automation)
    Asn(14061, "DigitalOcean", "US", "hosting", ((134, 209), (159, 65), (167, 99), (178, 128))),
    Asn(24940, "Hetzner", "DE", "hosting", ((95, 216), (88, 198), (116, 202), (5, 9))),
    Asn(16276, "OVH", "FR", "hosting", ((51, 68), (137, 74), (145, 239), (54, 36))),
    Asn(63949, "Akamai Linode", "US", "hosting", ((45, 79), (172, 104), (139, 162))),
    Asn(20473, "Vultr", "US", "hosting", ((45, 32), (45, 76), (149, 28))),
    Asn(9009, "M247", "GB", "hosting", ((185, 236), (89, 238), (217, 138))),
    Asn(45102, "Alibaba", "SG", "hosting", ((47, 74), (47, 88), (8, 219))),
)
BY_KIND: dict[str, tuple[Asn, ...]] = {
    k: tuple(a for a in ASNS if a.kind == k)
    for k in ("residential", "business", "cloud", "mobile", "hosting")
}
RESIDENTIAL_OR_MOBILE = BY_KIND["residential"] + BY_KIND["mobile"]

# Standard UTC offset per country (hours east); the US and others get a spread in `tz_for`.
_TZ: dict[str, tuple[float, ...]] = {
    "US": (-5.0, -6.0, -7.0, -8.0),
    "CA": (-5.0, -8.0),
    "BR": (-3.0,),
    "GB": (0.0,),
    "DE": (1.0,),
    "FR": (1.0,),
    "NL": (1.0,),
    "ES": (1.0,),
    "IN": (5.5,),
    "SG": (8.0,),
    "JP": (9.0,),
    "KR": (9.0,),
    "AU": (10.0,),
}


def tz_for(country: str, rng: np.random.Generator) -> float:
    opts = _TZ.get(country, (0.0,))
    return opts[int(rng.integers(len(opts)))]


# Country mix of benign customers (home networks): roughly where API customers are.
_HOME_WEIGHTS: dict[str, float] = {
    "US": 0.38,
    "DE": 0.07,
    "GB": 0.07,
    "FR": 0.06,
    "IN": 0.09,
    "JP": 0.05,
    "CA": 0.04,
    "BR": 0.04,
    "KR": 0.04,
    "AU": 0.03,
    "NL": 0.03,
    "ES": 0.03,
    "SG": 0.03,
    "XX": 0.04,  # mobile carriers, taken from the US list
}


def pick_asn(rng: np.random.Generator, kind: str, country: str | None = None) -> Asn:
    pool = BY_KIND[kind]
    if country is not None:
        local = tuple(a for a in pool if a.country == country)
        pool = local or pool
    return pool[int(rng.integers(len(pool)))]


def home_asn(rng: np.random.Generator) -> Asn:
    names = list(_HOME_WEIGHTS)
    w = np.array(list(_HOME_WEIGHTS.values()))
    c = names[int(rng.choice(len(names), p=w / w.sum()))]
    if c == "XX":
        return pick_asn(rng, "mobile", "US")
    return pick_asn(rng, "residential", c)


def ip_in(asn: Asn, rng: np.random.Generator) -> str:
    a, b = asn.prefixes[int(rng.integers(len(asn.prefixes)))]
    return f"{a}.{b}.{int(rng.integers(256))}.{int(rng.integers(1, 255))}"


@dataclass
class Endpoint:
    ip: str
    asn: int
    country: str


def endpoint(asn: Asn, rng: np.random.Generator) -> Endpoint:
    return Endpoint(ip_in(asn, rng), asn.asn, asn.country)


@dataclass
class NetProfile:
    """How one account's requests are spread over addresses.

    mode "stable": one main address (home or office) with a couple of occasional others (phone, café);
    "pool": a fixed set used evenly (NAT egress pools, a few VPS boxes); "rotate": a proxy pool where
    the address changes every request or every `rotate_s` seconds.
    """

    mode: Literal["stable", "pool", "rotate"]
    endpoints: list[Endpoint]
    main_share: float = 0.85
    rotate_s: float = 0.0  # 0: new address per request
    shared: bool = False  # several accounts share these endpoints (NAT, SaaS egress, proxy pool)
    _hour_cache: dict[int, Endpoint] = field(default_factory=dict, repr=False)

    def pick(self, ts: float, rnd: random.Random) -> Endpoint:
        eps = self.endpoints
        if self.mode == "stable":
            if len(eps) == 1 or rnd.random() < self.main_share:
                return eps[0]
            return eps[1 + int(rnd.random() * (len(eps) - 1))]
        if self.mode == "pool" or self.rotate_s <= 0:
            return eps[int(rnd.random() * len(eps))]
        # Sticky sessions: the proxy provider keeps an exit for `rotate_s` seconds, then moves on.
        slot = int(ts // self.rotate_s)
        ep = self._hour_cache.get(slot)
        if ep is None:
            self._hour_cache.clear()  # one slot at a time is all an account needs
            ep = eps[int(rnd.random() * len(eps))]
            self._hour_cache[slot] = ep
        return ep


def stable_profile(rng: np.random.Generator, home: Asn | None = None, extra: int | None = None) -> NetProfile:
    """A person: home (or office) address, sometimes a phone or a second location."""
    home = home or home_asn(rng)
    eps = [endpoint(home, rng)]
    k = int(rng.choice([0, 1, 1, 2, 3])) if extra is None else extra
    for _ in range(k):
        alt = pick_asn(rng, "mobile") if rng.random() < 0.5 else pick_asn(rng, "residential", home.country)
        eps.append(endpoint(alt, rng))
    return NetProfile("stable", eps, main_share=float(rng.uniform(0.75, 0.97)))


def nat_pool(rng: np.random.Generator, kind: str = "business", size: int | None = None) -> list[Endpoint]:
    """A company's (or cloud NAT gateway's) egress addresses: a few IPs inside one /24 of one ASN."""
    asn = pick_asn(rng, kind)
    a, b = asn.prefixes[int(rng.integers(len(asn.prefixes)))]
    c = int(rng.integers(256))
    k = int(rng.integers(1, 5)) if size is None else size
    last = rng.choice(np.arange(1, 255), size=k, replace=False)
    return [Endpoint(f"{a}.{b}.{c}.{int(d)}", asn.asn, asn.country) for d in last]


def proxy_pool(rng: np.random.Generator, n_asns: int = 3, n_addrs: int = 400) -> list[Endpoint]:
    """A residential proxy pool: hundreds of exits spread over many /24s of a few residential ASNs."""
    idx = rng.choice(len(RESIDENTIAL_OR_MOBILE), size=min(n_asns, len(RESIDENTIAL_OR_MOBILE)), replace=False)
    asns = [RESIDENTIAL_OR_MOBILE[int(i)] for i in idx]
    return [endpoint(asns[int(rng.integers(len(asns)))], rng) for _ in range(n_addrs)]


# -- user agents ---------------------------------------------------------------------------------------
def ua_python(rng: np.random.Generator) -> str:
    return f"OpenAI/Python 1.{int(rng.integers(12, 68))}.{int(rng.integers(0, 10))}"


def ua_node(rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        return f"openai-node/4.{int(rng.integers(20, 90))}.{int(rng.integers(0, 6))}"
    return f"OpenAI/JS 4.{int(rng.integers(20, 90))}.{int(rng.integers(0, 6))}"


def ua_curl(rng: np.random.Generator) -> str:
    return f"curl/8.{int(rng.integers(0, 12))}.{int(rng.integers(0, 2))}"


def ua_requests(rng: np.random.Generator) -> str:
    return f"python-requests/2.{int(rng.integers(25, 33))}.{int(rng.integers(0, 4))}"


def ua_httpx(rng: np.random.Generator) -> str:
    return f"python-httpx/0.{int(rng.integers(23, 29))}.{int(rng.integers(0, 3))}"


def ua_aiohttp(rng: np.random.Generator) -> str:
    return (
        f"Python/3.{int(rng.integers(9, 14))} aiohttp/3.{int(rng.integers(8, 12))}.{int(rng.integers(0, 6))}"
    )


def ua_go(rng: np.random.Generator) -> str:
    return "Go-http-client/2.0" if rng.random() < 0.8 else "Go-http-client/1.1"


def ua_langchain(rng: np.random.Generator) -> str:
    return f"langchain-openai/0.{int(rng.integers(1, 4))}.{int(rng.integers(0, 30))} {ua_python(rng)}"


def ua_litellm(rng: np.random.Generator) -> str:
    return f"litellm/1.{int(rng.integers(30, 75))}.{int(rng.integers(0, 20))}"


def ua_browser(rng: np.random.Generator) -> str:
    # Bring-your-own-key chat front ends call the API straight from the browser.
    v = int(rng.integers(118, 132))
    os_ = ["Windows NT 10.0; Win64; x64", "Macintosh; Intel Mac OS X 10_15_7", "X11; Linux x86_64"]
    return (
        f"Mozilla/5.0 ({os_[int(rng.integers(3))]}) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{v}.0.0.0 Safari/537.36"
    )


UA_MAKERS = {
    "python": ua_python,
    "node": ua_node,
    "curl": ua_curl,
    "requests": ua_requests,
    "httpx": ua_httpx,
    "aiohttp": ua_aiohttp,
    "go": ua_go,
    "langchain": ua_langchain,
    "litellm": ua_litellm,
    "browser": ua_browser,
}

# TLS client fingerprints (JA3-like digests) by client library: the same library gives the same digest,
# whoever runs it, so a shared fingerprint links nothing by itself.
_TLS = {
    "OpenAI/Python": "771f8b4c2a0e6d93e1a2c5b0d3f41e7a",
    "openai-node": "3b5074b1b5d032e5620f69f9f700ff0e",
    "OpenAI/JS": "3b5074b1b5d032e5620f69f9f700ff0e",
    "curl": "456523fc94726331a4d5a2e1d40b2cd7",
    "python-requests": "8d9f7747675e24454cd9b7ed35c58707",
    "python-httpx": "771f8b4c2a0e6d93e1a2c5b0d3f41e7a",
    "Python/3": "b32309a26951912be7dba376398abc3b",
    "Go-http-client": "f4febc55ea12b31ae17cfb7e614afda8",
    "langchain-openai": "771f8b4c2a0e6d93e1a2c5b0d3f41e7a",
    "litellm": "771f8b4c2a0e6d93e1a2c5b0d3f41e7a",
    "Mozilla": "cd08e31494f9531f560d64c695473da9",
}


def tls_fp(user_agent: str) -> str:
    for prefix, fp in _TLS.items():
        if user_agent.startswith(prefix):
            return fp
    return "e7d705a3286e19ea42f587b344ee6865"


def user_agents(rng: np.random.Generator, families: dict[str, float], k: int = 1) -> list[str]:
    """`k` user agents of families drawn by weight (a client upgrades, or runs two tools)."""
    names = list(families)
    w = np.array([families[n] for n in names], dtype=float)
    return [UA_MAKERS[names[int(rng.choice(len(names), p=w / w.sum()))]](rng) for _ in range(k)]
