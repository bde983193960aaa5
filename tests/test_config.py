"""Configuration parsing and validation: every bad input is one line with
file:line, and good input gives the dataclasses the core uses."""

import ipaddress
import textwrap

import pytest

from mpathd import config
from mpathd.config import ConfigError, parse_defaults, parse_groups


def groups(text: str):
    return parse_groups(textwrap.dedent(text), "g.yaml")


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        groups(text)
    return e.value


GOOD = """\
groups:
  ipmp0:
    interfaces:
      eth0:
        data: [192.0.2.100/24, "2001:db8:1::100/64"]
        test: [192.0.2.10/24, link-local]
      eth1:
        test: [192.0.2.11/24]
        standby: true
    data: [192.0.2.200/24]
    targets: [192.0.2.1]
"""


def test_good_config_parses():
    (g,) = groups(GOOD)
    assert g.name == "ipmp0"
    eth0, eth1 = g.interfaces
    assert eth0.data == (ipaddress.ip_interface("192.0.2.100/24"), ipaddress.ip_interface("2001:db8:1::100/64"))
    assert eth0.test == (ipaddress.ip_interface("192.0.2.10/24"),) and eth0.test_link_local
    assert eth1.standby and not eth0.standby and eth1.group == "ipmp0"
    assert g.data == (ipaddress.ip_interface("192.0.2.200/24"),)
    assert g.targets == (ipaddress.ip_address("192.0.2.1"),)


@pytest.mark.parametrize("text, line, words", [
    ("groups:\n  g:\n    interfaces:\n      eth0: {standbi: true}\n", 4, "unknown key 'standbi'"),
    ("groups:\n  g:\n    interfaces:\n      eth0: {}\n    dat: []\n", 5, "unknown key 'dat'"),
    ("group:\n  g: {}\n", 1, "unknown key 'group'"),
    ("groups:\n  g:\n    interfaces:\n      eth0:\n        data: [192.0.2.300/24]\n", 5, "not a valid"),
    ("groups:\n  g:\n    interfaces:\n      eth0:\n        data: [192.0.2.3]\n", 5, "needs a prefix"),
    ("groups:\n  g:\n    interfaces:\n      eth0:\n        data: [192.0.2.3/33]\n", 5, "not a valid"),
    ("groups:\n  g:\n    interfaces:\n      eth0:\n        data: [192.0.2.0/24]\n", 5, "network or broadcast"),
    ("groups:\n  a:\n    interfaces:\n      eth0: {}\n  b:\n    interfaces:\n      eth0: {}\n", 7,
     "interface eth0 is in group 'a'"),
    ("groups:\n  a:\n    interfaces:\n      eth0: {data: [192.0.2.5/24]}\n"
     "  b:\n    interfaces:\n      eth1: {data: [192.0.2.6/24]}\n", 7, "also used by group 'a'"),
    ("groups:\n  g:\n    interfaces:\n      eth0:\n        standby: true\n        data: [192.0.2.5/24]\n", 6,
     "standby NIC"),
    ("groups:\n  g:\n    interfaces:\n      eth0: {data: [192.0.2.5/24]}\n"
     "      eth1: {data: [192.0.2.5/24]}\n", 5, "configured twice (also on line 4)"),
    ("groups:\n  g:\n    interfaces:\n      eth0: {test: [192.0.2.5/24]}\n"
     "    data: [192.0.2.5/24]\n", 5, "configured twice"),
    ("groups:\n  g:\n    interfaces:\n      eth0: {test: [192.0.2.10/24]}\n"
     "      eth1: {test: [198.51.100.10/24]}\n", 5, "not in subnet 192.0.2.0/24"),
    ("groups:\n  g:\n    interfaces:\n      eth0: {test: ['2001:db8::5/64']}\n", 4, "link-local"),
    ("groups:\n  g:\n    interfaces:\n      eth0: {standby: maybe}\n", 4, "true or false"),
    ("groups:\n  g:\n    interfaces:\n      eth0: {data: 192.0.2.5/24}\n", 4, "must be a list"),
    ("groups:\n  g:\n    interfaces:\n      eth0: {}\n    targets: [192.0.2.1/24]\n", 5, "no prefix"),
    ("groups:\n  g:\n    interfaces:\n      eth0: {}\n      eth0: {}\n", 5, "given twice"),
    ("groups:\n  g:\n    interfaces: {}\n", 2, "no interfaces"),
    ("groups:\n  g:\n    data: [192.0.2.5/24]\n", 2, "no interfaces"),
    ("groups:\n  g:\n    interfaces:\n      this-name-is-too-long: {}\n", 4, "invalid interface name"),
    ("groups:\n  g:\n    interfaces:\n      eth0: {data: [192.0.2.5/24\n", 5, "YAML syntax error"),
])
def test_bad_groups_name_the_line(text, line, words):
    e = error(text)
    assert e.line == line, str(e)
    assert words in e.message, str(e)
    assert str(e).startswith(f"g.yaml:{line}: ")
    assert "\n" not in str(e)


def test_empty_groups_file_is_no_groups():
    assert groups("") == ()
    assert groups("groups:\n") == ()


def test_defaults_parse_and_clamp():
    d, warnings = parse_defaults("# c\nFAILURE_DETECTION_TIME=2000\nFAILBACK=no\n"
                                 "TRACK_INTERFACES_ONLY_WITH_GROUPS = \"no\"\n", "d")
    assert (d.fdt_ms, d.failback, d.track_only_groups) == (2000, False, False)
    assert warnings == []
    d, warnings = parse_defaults("FAILURE_DETECTION_TIME=50\n", "d")
    assert d.fdt_ms == 100
    assert warnings == ["d:1: Too small failure detection time of 50, assuming minimum of 100 ms"]
    assert parse_defaults("", "d")[0] == config.Defaults()
    d, _ = parse_defaults("ANNOUNCE_COUNT=3\nANNOUNCE_INTERVAL=500\n", "d")
    assert (d.announce_count, d.announce_interval_ms) == (3, 500)
    assert (config.Defaults().announce_count, config.Defaults().announce_interval_ms) == (5, 200)
    assert config.Defaults().arp_flux_protection
    assert not parse_defaults("ARP_FLUX_PROTECTION=no\n", "d")[0].arp_flux_protection


@pytest.mark.parametrize("text, line, words", [
    ("FAILURE_DETECTION_TIME=10s\n", 1, "whole number"),
    ("\nFAILURE_DETECTION_TIME=0\n", 2, "whole number"),
    ("FAILBACK=sometimes\n", 1, "Invalid value for FAILBACK"),
    ("FAILBACK=yes\nFAILBACK=no\n", 2, "set twice"),
    ("\nARP_FLUX_PROTECTION=off\n", 2, "Invalid value for ARP_FLUX_PROTECTION 'off' (expected yes or no)"),
    ("FDT=100\n", 1, "unknown key 'FDT'"),
    ("ANNOUNCE_COUNT=0\n", 1, "ANNOUNCE_COUNT must be a whole number from 1 to 255, got '0'"),
    ("\nANNOUNCE_INTERVAL=5\n", 2, "ANNOUNCE_INTERVAL must be a whole number of milliseconds from 10 to 10000"),
    ("ANNOUNCE_INTERVAL=0.2s\n", 1, "ANNOUNCE_INTERVAL must be a whole number"),
    ("just words\n", 1, "expected KEY=VALUE"),
])
def test_bad_defaults_name_the_line(text, line, words):
    with pytest.raises(ConfigError) as e:
        parse_defaults(text, "d")
    assert e.value.line == line and words in e.value.message


def test_load_reports_missing_files(tmp_path):
    g = tmp_path / "groups.yaml"
    g.write_text(GOOD)
    cfg = config.load(str(tmp_path / "absent"), str(g), defaults_optional=True)
    assert cfg.defaults == config.Defaults() and len(cfg.groups) == 1
    with pytest.raises(ConfigError, match="no such file"):       # a path that was asked for must exist
        config.load(str(tmp_path / "absent"), str(g))
    with pytest.raises(ConfigError, match="no such file"):
        config.load(str(tmp_path / "absent"), str(tmp_path / "nogroups.yaml"))


ROUTES = """\
groups:
  ipmp0:
    interfaces:
      eth0: {data: [192.0.2.100/24, "2001:db8:1::100/64"]}
      eth1: {data: [192.0.2.101/24]}
    spreading: false
    routes:
      - {to: default, via: 192.0.2.1}
      - {to: 203.0.113.0/24, via: 192.0.2.1, table: 100, metric: 50, mtu: 1400, mtu_lock: true,
         initcwnd: 20, src: 192.0.2.100, dev: eth1}
      - {to: "2001:db8:9::/48", via: "fe80::1", pref: high}
"""


def test_declared_routes_parse():
    (g,) = groups(ROUTES)
    assert g.spreading is False
    default, policy, six = g.routes
    assert (str(default.dst), str(default.via), default.table, default.metric) == ("0.0.0.0/0", "192.0.2.1", 254, 0)
    assert (policy.table, policy.metric, policy.dev, str(policy.src)) == (100, 50, "eth1", "192.0.2.100")
    assert dict(policy.attrs) == {"mtu": 1400, "mtu_lock": True, "initcwnd": 20}
    assert dict(six.attrs) == {"pref": "high"} and six.dst.version == 6
    (g,) = groups(GOOD)
    assert g.spreading is True and g.routes == ()


@pytest.mark.parametrize("route, words", [
    ("{via: 192.0.2.1}", "needs 'to'"),
    ("{to: default}", "'to: default' needs 'via'"),
    ("{to: 192.0.2.0/33, via: 192.0.2.1}", "is not a prefix"),
    ("{to: 203.0.113.1/24, via: 192.0.2.1}", "is not a prefix"),
    ("{to: default, via: 2001:db8::1, src: 192.0.2.100}", "not of the family"),
    ("{to: default, via: 192.0.2.1, dev: eth7}", "dev eth7 is not an interface of group ipmp0"),
    ("{to: default, via: 192.0.2.1, src: 192.0.2.7}", "src 192.0.2.7 is not a data address"),
    ("{to: default, via: 192.0.2.1, table: 255}", "reserved"),
    ("{to: default, via: 192.0.2.1, mtu: 20}", "mtu must be a whole number from 68"),
    ("{to: default, via: 192.0.2.1, mtu_lock: true}", "mtu_lock needs mtu"),
    ("{to: default, via: 192.0.2.1, pref: high}", "IPv6 routes only"),
    ("{to: default, via: 192.0.2.1, color: red}", "unknown key 'color'"),
    ("{to: default, via: 224.0.0.1}", "not a unicast address"),
    ("{to: default, via: 203.0.113.77}", "on none of the group's subnets"),
])
def test_bad_routes_name_the_line(route, words):
    text = ("groups:\n  ipmp0:\n    interfaces:\n      eth0: {data: [192.0.2.100/24]}\n"
            f"    routes:\n      - {{to: 198.51.100.0/24, via: 192.0.2.1}}\n      - {route}\n")
    e = error(text)
    assert e.line == 7 and words in e.message, e.message


def test_a_router_off_the_groups_subnets_needs_onlink():
    base = "groups:\n  ipmp0:\n    interfaces:\n      eth0: {data: [192.0.2.100/24]}\n    routes:\n"
    (g,) = groups(base + "      - {to: default, via: 203.0.113.77, onlink: true}\n")
    assert str(g.routes[0].via) == "203.0.113.77"
    (g,) = groups(base + "      - {to: '2001:db8:9::/48', via: 'fe80::1'}\n")
    assert str(g.routes[0].via) == "fe80::1"


def test_a_route_declared_twice_is_refused():
    text = ("groups:\n  ipmp0:\n    interfaces:\n      eth0: {data: [192.0.2.100/24]}\n    routes:\n"
            "      - {to: default, via: 192.0.2.1}\n      - {to: default, via: 192.0.2.2}\n")
    e = error(text)
    assert e.line == 7 and "declared twice (also on line 6)" in e.message


def test_arp_replaces_the_ipv4_test_address():
    (g,) = groups("""\
    groups:
      ipmp0:
        interfaces:
          eth0: {data: [192.0.2.100/24], test: [arp, link-local]}
          eth1: {standby: true, test: [arp]}
    """)
    eth0, eth1 = g.interfaces
    assert (eth0.test, eth0.test_arp, eth0.test_link_local) == ((), True, True)
    assert (eth1.test, eth1.test_arp, eth1.standby) == ((), True, True)


@pytest.mark.parametrize("test, words", [
    ("[arp, arp]", "'arp' given twice"),
    ("[arp, 192.0.2.10/24]", "either 'arp' or an IPv4 test address"),
    ("[192.0.2.10/24, arp]", "either 'arp' or an IPv4 test address"),
])
def test_bad_arp_test_lists_name_the_line(test, words):
    e = error(f"""\
    groups:
      ipmp0:
        interfaces:
          eth0: {{data: [192.0.2.100/24], test: {test}}}
    """)
    assert e.line == 4 and words in e.message


def test_arp_needs_an_ipv4_data_subnet():
    e = error("""\
    groups:
      ipmp0:
        interfaces:
          eth0: {data: ["2001:db8:1::100/64"], test: [arp]}
    """)
    assert e.line == 2 and "no IPv4 data address" in e.message
