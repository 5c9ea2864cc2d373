"""What the simulator's reports and live dashboard say, in Simplified Chinese and English.

One catalogue for the terminal summary, the progress bar, the HTML report and
the live dashboard, because they share their vocabulary (hops, fault kinds,
domain rules, verdict) and a tester reads them side by side: the same fault
must have the same name in the summary, the report and on the dashboard.
Same shape as ``gateway/web_text.py``: key -> {zh, en}.

Words the outlet's devices use (compartment states, alarm kinds, device
kinds) are not repeated here: ``label`` falls back to the clerk's page
catalogue, so a locker state reads the same in the simulator as on the
status page in a real outlet. Anything neither catalogue knows (a new fault
kind, a state a newer firmware sends) is shown as sent, behind a generic
label, so a runner that grows a fault never breaks a report.
"""

from __future__ import annotations

from gateway.http import web_text

LANGS = ("zh", "en")

TEXT: dict[str, dict[str, str]] = {
    # verdict: the zh line keeps the English word so CI logs can be grepped either way
    "verdict.pass": {"zh": "结论：通过（PASS）", "en": "Verdict: PASS"},
    "verdict.fail": {"zh": "结论：未通过（FAIL）", "en": "Verdict: FAIL"},
    "verdict.failures": {"zh": "未通过：{items}", "en": "Failed: {items}"},
    "ok": {"zh": "正常", "en": "ok"},
    "fail": {"zh": "失败", "en": "FAIL"},
    "tolerated": {"zh": "（容许：{items}）", "en": " (tolerated: {items})"},
    # the run
    "title.report": {"zh": "网点模拟报告：{scenario}", "en": "Outlet simulation report: {scenario}"},
    "run.line": {"zh": "场景 {scenario}，种子 {seed}，{mode}，模拟时长 {virtual}，实际用时 {wall}",
                 "en": "scenario {scenario}, seed {seed}, {mode}, simulated {virtual}, took {wall}"},
    "mode.virtual": {"zh": "虚拟时钟", "en": "virtual time"},
    "mode.real": {"zh": "真实时钟", "en": "real time"},
    "broker": {"zh": "消息代理：{broker}", "en": "Broker: {broker}"},
    "trace": {"zh": "轨迹哈希：{hash}", "en": "Trace hash: {hash}"},
    "unknown": {"zh": "未知", "en": "unknown"},
    "switch": {"zh": "English", "en": "中文"},
    "switch_hint": {"zh": "Switch to English", "en": "切换到中文"},
    # sections
    "sec.ledger": {"zh": "投递账本（逐个环节）", "en": "Delivery ledger (hop by hop)"},
    "sec.domain": {"zh": "业务规则", "en": "Domain rules"},
    "sec.latency": {"zh": "各环节延迟（从设备发出算起）", "en": "Latency per hop (from device emit)"},
    "sec.faults": {"zh": "注入的故障", "en": "Faults injected"},
    "sec.expect": {"zh": "预期检查", "en": "Expectations"},
    "sec.devices": {"zh": "设备", "en": "Devices"},
    "sec.timeline": {"zh": "各设备事件时间线", "en": "Per-device event timeline"},
    "sec.backlog": {"zh": "网关待上传积压", "en": "Gateway backlog over time"},
    "no_faults": {"zh": "没有注入故障", "en": "No faults injected"},
    "no_events": {"zh": "没有事件", "en": "No events"},
    "no_data": {"zh": "无数据", "en": "no data"},
    "no_expect": {"zh": "没有预期检查", "en": "No expectations"},
    # ledger table
    "col.hop": {"zh": "环节", "en": "hop"},
    "col.seen": {"zh": "收到", "en": "seen"},
    "col.unique": {"zh": "去重后", "en": "unique"},
    "col.lost": {"zh": "丢失", "en": "lost"},
    "col.duplicated": {"zh": "重复", "en": "dup"},
    "col.unexpected": {"zh": "来历不明", "en": "unexpected"},
    "col.skipped": {"zh": "跳过", "en": "skipped"},
    "col.reordered": {"zh": "乱序", "en": "reordered"},
    "col.bad_ids": {"zh": "坏编号", "en": "bad ids"},
    "col.result": {"zh": "结果", "en": "result"},
    "col.rule": {"zh": "规则", "en": "rule"},
    "col.violations": {"zh": "违规", "en": "violations"},
    "col.stats": {"zh": "统计", "en": "counts"},
    "col.samples": {"zh": "样本", "en": "n"},
    "col.device": {"zh": "设备", "en": "device"},
    "col.kind": {"zh": "类型", "en": "kind"},
    "col.events": {"zh": "事件", "en": "events"},
    "col.online": {"zh": "在线时间", "en": "online"},
    "col.when": {"zh": "时间", "en": "when"},
    "col.fault": {"zh": "故障", "en": "fault"},
    "col.detail": {"zh": "说明", "en": "detail"},
    "col.check": {"zh": "检查", "en": "check"},
    "ledger.events": {"zh": "来源共 {n} 个事件", "en": "{n} events at the source"},
    "examples": {"zh": "例：{items}", "en": "e.g. {items}"},
    "hop.device": {"zh": "设备", "en": "device"},
    "hop.broker": {"zh": "消息代理", "en": "broker"},
    "hop.gateway": {"zh": "网关", "en": "gateway"},
    "hop.central": {"zh": "中心平台", "en": "central"},
    "hop.end_to_end": {"zh": "端到端", "en": "end to end"},
    "hop.arrow": {"zh": "{a} → {b}", "en": "{a} -> {b}"},
    # domain rules
    "rule.parcel_final_state": {"zh": "每个包裹恰有一个最终状态", "en": "each parcel ends exactly once"},
    "rule.one_parcel_per_compartment": {"zh": "一个格口只放一个包裹", "en": "one parcel per compartment"},
    "rule.door_needs_authority": {"zh": "开门必须有授权", "en": "no door opens without authority"},
    "rule.door_states_consistent": {"zh": "柜门状态前后一致", "en": "door states consistent"},
    "rule.photo_arrives_once": {"zh": "每张照片恰好到达一次", "en": "every photo arrives once"},
    "rule.unknown": {"zh": "{name}", "en": "{name}"},
    # latency
    "lat.axis": {"zh": "毫秒（对数刻度）", "en": "ms (log scale)"},
    # faults
    "fault.wan_down": {"zh": "外网中断", "en": "WAN down"},
    "fault.wan_flap": {"zh": "外网时断时续", "en": "WAN flapping"},
    "fault.wan_lossy": {"zh": "外网丢包", "en": "WAN lossy"},
    "fault.wan_slow": {"zh": "外网缓慢", "en": "WAN slow"},
    "fault.broker_restart": {"zh": "消息代理重启", "en": "broker restart"},
    "fault.gateway_kill": {"zh": "网关被强杀（kill -9）", "en": "gateway kill -9"},
    "fault.power_cut": {"zh": "设备断电", "en": "device power cut"},
    "fault.disk_full": {"zh": "网关磁盘已满", "en": "gateway disk full"},
    "fault.lan_down": {"zh": "局域网中断", "en": "LAN down"},
    "fault.unknown": {"zh": "故障：{kind}", "en": "fault: {kind}"},
    "fault.span": {"zh": "{a} 至 {b}", "en": "{a} to {b}"},
    "fault.at": {"zh": "{a}", "en": "at {a}"},
    "fault.active": {"zh": "进行中", "en": "active"},
    "fault.over": {"zh": "已结束", "en": "over"},
    "fault.pending": {"zh": "未开始", "en": "pending"},
    # classes of events (the gateway's data classes)
    "cls.custody": {"zh": "保管", "en": "custody"},
    "cls.alarm": {"zh": "警报", "en": "alarm"},
    "cls.audit": {"zh": "审计", "en": "audit"},
    "cls.status": {"zh": "状态", "en": "status"},
    "cls.telemetry": {"zh": "遥测", "en": "telemetry"},
    "cls.other": {"zh": "其他", "en": "other"},
    # plots
    "plot.time": {"zh": "模拟时间", "en": "simulated time"},
    "plot.offline": {"zh": "离线", "en": "offline"},
    "plot.fault": {"zh": "故障时段", "en": "fault window"},
    "plot.binned": {"zh": "共 {n} 个事件，按像素列合并显示", "en": "{n} events, merged per pixel column"},
    "plot.count": {"zh": "积压事件数", "en": "events waiting"},
    "plot.bytes": {"zh": "积压字节数", "en": "bytes waiting"},
    "plot.peak": {"zh": "峰值 {n} 条（{size}），结束时 {end} 条",
                  "en": "peak {n} events ({size}), {end} at the end"},
    "plot.row": {"zh": "{device}（{kind}）：{events} 个事件，在线 {pct}%",
                 "en": "{device} ({kind}): {events} events, online {pct}%"},
    "plot.mark": {"zh": "{t}：{n} 个{cls}事件", "en": "{t}: {n} {cls} event(s)"},
    # progress bar
    "progress": {"zh": "{bar} {pct:>3}%  模拟时间 {t} / {total}  事件 {events}  进行中的故障 {faults}",
                 "en": "{bar} {pct:>3}%  sim time {t} / {total}  events {events}  faults active {faults}"},
    "progress.done": {"zh": "完成，用时 {wall}", "en": "done in {wall}"},
    # dashboard
    "dash.title": {"zh": "网点模拟 · 实时看板", "en": "Outlet simulation · live"},
    "dash.scenario": {"zh": "场景 {scenario}", "en": "Scenario {scenario}"},
    "dash.clock": {"zh": "模拟时间 {t}", "en": "Sim time {t}"},
    "dash.stale": {"zh": "连不上模拟器，显示的是最后收到的数据，正在重试……",
                   "en": "Cannot reach the simulator. Showing the last data received. Retrying…"},
    "dash.lockers": {"zh": "快递柜格口", "en": "Locker compartments"},
    "dash.devices": {"zh": "设备在线情况", "en": "Devices online"},
    "dash.backlog": {"zh": "网关待上传", "en": "Gateway backlog"},
    "dash.backlog_detail": {"zh": "{size}，最早一条已等 {age}", "en": "{size}, oldest waiting {age}"},
    "dash.alarms": {"zh": "警报（最新在上）", "en": "Alarms (newest first)"},
    "dash.faults": {"zh": "故障", "en": "Faults"},
    "dash.ledger": {"zh": "各环节已收到事件", "en": "Events seen per hop"},
    "dash.no_alarms": {"zh": "没有警报", "en": "No alarms"},
    "dash.no_lockers": {"zh": "没有快递柜", "en": "No lockers"},
    "dash.online": {"zh": "在线", "en": "online"},
    "dash.offline": {"zh": "离线", "en": "offline"},
    "dash.locker_head": {"zh": "快递柜 {device}", "en": "Locker {device}"},
    "dash.locker_counts": {"zh": "{free} 空闲 / 共 {total}", "en": "{free} free of {total}"},
    "dash.locker_offline": {"zh": "离线：格口为最后已知状态", "en": "offline: compartments as last known"},
    "dash.done": {"zh": "模拟已结束", "en": "Simulation finished"},
    "state.expired": {"zh": "已过期", "en": "Expired"},
}


class _Blank(dict):
    """Format mapping that shows "?" for a field left out, so a fault or an
    alarm without its usual details still reads as a sentence."""

    def __missing__(self, key: str) -> str:
        return "?"


def check_lang(lang: str) -> str:
    """Refuse a language we have no text for, loudly: a report in the wrong
    language is worse than an error the caller sees at once."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {', '.join(LANGS)}, got {lang!r}")
    return lang


def has(key: str) -> bool:
    return key in TEXT or web_text.has(key)


def t(key: str, lang: str, **kw: object) -> str:
    """Text for ``key``; this catalogue first, then the status page's. A
    key in neither raises KeyError, so a typo fails the tests."""
    src = TEXT.get(key) or web_text.TEXT[key]
    return src[lang].format_map(_Blank(kw))


def fault_name(kind: object, lang: str) -> str:
    key = f"fault.{kind}"
    return t(key, lang) if key in TEXT else t("fault.unknown", lang, kind=kind)


def hop_name(hop: object, lang: str) -> str:
    key = f"hop.{hop}"
    return t(key, lang) if key in TEXT else str(hop)


def rule_name(name: object, lang: str) -> str:
    key = f"rule.{name}"
    return t(key, lang) if key in TEXT else str(name)


def cls_name(cls: object, lang: str) -> str:
    key = f"cls.{cls}"
    return t(key, lang) if key in TEXT else str(cls)


def state_name(state: object, lang: str) -> str:
    """A compartment state as the clerk's page names it."""
    key = f"state.{state}"
    return t(key, lang) if has(key) and key != "state.unknown" else t("state.unknown", lang, state=state)


def kind_name(kind: object, lang: str) -> str:
    key = f"kind.{kind}"
    return t(key, lang) if has(key) else str(kind)


def alarm_text(alarm: dict[str, object], lang: str) -> str:
    """"3 号格口：柜门未关", with the clerk page's words for known alarms."""
    kind = alarm.get("alarm")
    key = f"alarm.{kind}"
    fields = {k: v for k, v in alarm.items() if k != "alarm"}
    what = t(key, lang, **fields) if has(key) and key != "alarm.unknown" else t("alarm.unknown", lang,
                                                                                   alarm=kind)
    cid = alarm.get("compartment")
    return (t("alarm.where", lang, id=cid) if cid is not None else "") + what
