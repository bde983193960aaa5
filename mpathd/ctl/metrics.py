"""ipmpctl metrics: the daemon's status in the Prometheus text format
(version 0.0.4), for node_exporter's textfile collector or any scraper."""

from __future__ import annotations

from ..core.states import GroupState, NicState


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Out:
    """Samples grouped by family: the format wants each family's samples
    together, after its HELP and TYPE lines."""

    def __init__(self) -> None:
        self.families: dict[str, list[str]] = {}

    def metric(self, name: str, kind: str, help_: str, labels: dict, value: float) -> None:
        lines = self.families.setdefault(name, [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"])
        body = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{body}}} {value:g}" if body else f"{name} {value:g}")

    @property
    def lines(self) -> list[str]:
        return [line for family in self.families.values() for line in family]


def render(status: dict) -> str:
    out = _Out()
    for g in status["groups"]:
        lab = {"group": g["name"]}
        for state in GroupState:
            out.metric("mpathd_group_state", "gauge", "1 for the state the group is in (ok, degraded, failed).",
                       {**lab, "state": state}, int(g["state"] == state))
        out.metric("mpathd_group_fdt_seconds", "gauge", "Failure detection time in force.", lab,
                   g["fdt_ms"] / 1000)
        out.metric("mpathd_group_configured_fdt_seconds", "gauge", "FAILURE_DETECTION_TIME as configured.",
                   lab, g["user_fdt_ms"] / 1000)
        out.metric("mpathd_group_failovers_total", "counter", "Moves of addresses off failed NICs.", lab,
                   g["failovers"])
        out.metric("mpathd_group_failbacks_total", "counter", "Moves of addresses back to repaired NICs.",
                   lab, g["failbacks"])
    for i in status["interfaces"]:
        lab = {"interface": i["name"], "group": i["group"] or ""}
        for state in NicState:
            out.metric("mpathd_interface_state", "gauge", "1 for the state the NIC is in.",
                       {**lab, "state": state}, int(i["state"] == state))
        out.metric("mpathd_interface_active", "gauge", "1 if the NIC carries data addresses.", lab,
                   int(i["active"]))
        out.metric("mpathd_interface_link_up", "gauge", "1 if the NIC has carrier.", lab, int(i["link"] == "up"))
        if i["group"]:
            out.metric("mpathd_interface_failures_total", "counter", "Failures detected.", lab, i["failures"])
            out.metric("mpathd_interface_repairs_total", "counter", "Repairs detected.", lab, i["repairs"])
        for key, help_ in (("sent", "Probes sent."), ("acked", "Probes answered."),
                           ("lost", "Probes lost."), ("late", "Probes the daemon itself sent late."),
                           ("missed", "Probes the daemon failed to send in time.")):
            if key in i["probes"]:
                out.metric(f"mpathd_probes_{key}_total", "counter", help_, lab, i["probes"][key])
    for t in status["targets"]:
        for target, rtt in t.get("rtt", {}).items():
            lab = {"interface": t["interface"], "family": f"ipv{t['family']}", "target": target}
            out.metric("mpathd_target_rtt_seconds", "gauge", "Smoothed round-trip time to a probe target.",
                       lab, rtt["avg_ms"] / 1000)
            out.metric("mpathd_target_rtt_deviation_seconds", "gauge", "Mean deviation of that RTT.",
                       lab, rtt["dev_ms"] / 1000)
    for a in status["addresses"]:
        out.metric("mpathd_address_up", "gauge", "1 if the data address is on a NIC.",
                   {"address": a["address"], "group": a["group"], "interface": a["interface"] or ""},
                   int(a["interface"] is not None))
    return "\n".join(out.lines) + "\n"
