"""What the clerk's status page says, in Simplified Chinese and English.

Kept apart from ``postedge/i18n.py`` because the page has its own
vocabulary (compartment states, alarm kinds, parcel actions) that the CLI
never prints, and because a translator should be able to read the page's
whole text in one place. Same shape as the CLI catalogue: key → {zh, en}.

Words that come from devices (alarm kinds, event types, compartment states)
have an entry here when the firmware is known to send them; anything newer
is shown as the device sent it, escaped, behind a generic label, so a
firmware roll-out never breaks the page.
"""

from __future__ import annotations

LANGS = ("zh", "en")

TEXT: dict[str, dict[str, str]] = {
    "title": {"zh": "网点设备状态", "en": "Outlet status"},
    "outlet": {"zh": "网点 {outlet}", "en": "Outlet {outlet}"},
    "updated": {"zh": "更新于 {clock}，每 {n} 秒自动刷新", "en": "Updated {clock}, refreshes every {n} s"},
    "stale": {"zh": "无法连接网关，下面是 {clock} 的数据，正在重试……",
              "en": "Cannot reach the gateway. Showing data from {clock}. Retrying…"},
    "switch": {"zh": "English", "en": "中文"},
    "switch_hint": {"zh": "Switch to English", "en": "切换到中文"},
    # overall verdict at the top
    "overall.ok": {"zh": "一切正常", "en": "All good"},
    "overall.warn": {"zh": "需要注意", "en": "Needs attention"},
    "overall.alarm": {"zh": "有警报，请处理", "en": "Alarm: please act"},
    "why.alarm": {"zh": "最近一小时有警报", "en": "an alarm in the last hour"},
    "why.offline": {"zh": "{n} 台设备离线", "en": "{n} device(s) offline"},
    "why.retrieval": {"zh": "{n} 个格口等快递员处理", "en": "{n} compartment(s) waiting for the courier"},
    "why.backlog": {"zh": "已有 {d} 的数据没有上传", "en": "data not uploaded for {d}"},
    # status labels: every colour also carries a word
    "label.online": {"zh": "在线", "en": "Online"},
    "label.offline": {"zh": "离线", "en": "Offline"},
    "label.alarm": {"zh": "警报", "en": "Alarm"},
    # summary tiles
    "tile.devices": {"zh": "在线设备", "en": "Devices online"},
    "tile.parcels": {"zh": "柜中包裹", "en": "Parcels in lockers"},
    "tile.alarms": {"zh": "24 小时内警报", "en": "Alarms, last 24 h"},
    "tile.backlog": {"zh": "待上传事件", "en": "Events waiting to upload"},
    "of": {"zh": "{a} / {b}", "en": "{a} of {b}"},
    # sections
    "sec.alarms": {"zh": "警报", "en": "Alarms"},
    "sec.devices": {"zh": "设备", "en": "Devices"},
    "sec.lockers": {"zh": "快递柜格口", "en": "Locker compartments"},
    "sec.parcels": {"zh": "最近的包裹记录", "en": "Recent parcel activity"},
    "sec.sync": {"zh": "数据上传", "en": "Upload to head office"},
    "no_alarms": {"zh": "没有警报", "en": "No alarms"},
    "no_devices": {"zh": "还没有设备连接过网关", "en": "No device has connected yet"},
    "no_lockers": {"zh": "还没有收到快递柜的状态", "en": "No locker has reported its state yet"},
    "no_parcels": {"zh": "还没有包裹记录", "en": "No parcel activity yet"},
    # device table
    "col.device": {"zh": "设备", "en": "Device"},
    "col.kind": {"zh": "类型", "en": "Type"},
    "col.status": {"zh": "状态", "en": "Status"},
    "col.seen": {"zh": "最后上报", "en": "Last report"},
    "col.when": {"zh": "时间", "en": "When"},
    "col.what": {"zh": "内容", "en": "What"},
    "col.compartment": {"zh": "格口", "en": "Compartment"},
    "col.parcel": {"zh": "包裹号", "en": "Parcel"},
    "online_for": {"zh": "已在线 {d}", "en": "online for {d}"},
    "offline_for": {"zh": "已离线 {d}", "en": "offline for {d}"},
    "kind.locker": {"zh": "快递柜", "en": "Locker"},
    "kind.scanner": {"zh": "扫描枪", "en": "Scanner"},
    "kind.handheld": {"zh": "手持终端", "en": "Handheld"},
    "kind.gateway": {"zh": "网关", "en": "Gateway"},
    # lockers
    "locker.head": {"zh": "快递柜 {device}", "en": "Locker {device}"},
    "locker.counts": {"zh": "共 {total} 个格口：{free} 个空闲，{parcels} 个有包裹",
                      "en": "{total} compartments: {free} free, {parcels} with a parcel"},
    "locker.retrieval": {"zh": "快递员需取回：{items}", "en": "Courier to take out: {items}"},
    "locker.retrieval_none": {"zh": "没有需要快递员取回的包裹", "en": "Nothing for the courier to take out"},
    "locker.outbox": {"zh": "设备内待发送 {n} 条，存储已用 {pct}%",
                      "en": "{n} events waiting on the device, storage {pct}% used"},
    "locker.offline_note": {"zh": "设备离线：格口信息是离线前的最后状态",
                            "en": "Device offline: compartments as last reported"},
    "compartment": {"zh": "{id} 号格口", "en": "Compartment {id}"},
    "cid": {"zh": "{id} 号", "en": "No. {id}"},
    "state.free": {"zh": "空闲", "en": "Free"},
    "state.reserved": {"zh": "已预留", "en": "Reserved"},
    "state.occupied": {"zh": "有包裹", "en": "Parcel"},
    "state.overdue": {"zh": "逾期", "en": "Overdue"},
    "state.return_waiting": {"zh": "待退件", "en": "Return"},
    "state.inspect": {"zh": "需检查", "en": "Check"},
    "state.out_of_service": {"zh": "停用", "en": "Out of service"},
    "state.unknown": {"zh": "未知（{state}）", "en": "Unknown ({state})"},
    # alarms: "{where}{what}" with where = "3 号格口：" when the alarm names one
    "alarm.where": {"zh": "{id} 号格口：", "en": "Compartment {id}: "},
    "alarm.door_forced": {"zh": "柜门被强行打开", "en": "door forced open"},
    "alarm.door_left_open": {"zh": "柜门未关", "en": "door left open"},
    "alarm.lockout": {"zh": "取件码错误次数过多，已暂停取件 {seconds} 秒",
                      "en": "too many wrong pickup codes, pickup paused for {seconds} s"},
    "alarm.lock_board_fault": {"zh": "锁控板故障，请联系客服", "en": "lock board fault, call support"},
    "alarm.outbox_full": {"zh": "设备存储已满，请联系客服", "en": "device storage full, call support"},
    "alarm.outbox_nearly_full": {"zh": "设备存储快满了", "en": "device storage nearly full"},
    "alarm.journal_corrupt": {"zh": "设备记录损坏，请联系客服", "en": "device journal damaged, call support"},
    "alarm.recovered_inconsistent": {"zh": "断电后状态不明，请检查",
                                     "en": "state unclear after a power cut, please check"},
    "alarm.budget_threatened": {"zh": "网关存储空间快用完了，请联系客服",
                                "en": "gateway storage almost full, call support"},
    "alarm.unknown": {"zh": "警报：{alarm}", "en": "alarm: {alarm}"},
    "alarm.unreadable": {"zh": "警报（内容无法显示）", "en": "Alarm (its details cannot be shown)"},
    "row.unreadable": {"zh": "（此条无法显示）", "en": "(this entry cannot be shown)"},
    # parcel (custody) events
    "evt.locker.deposit": {"zh": "快递员投递", "en": "Delivered by courier"},
    "evt.locker.pickup": {"zh": "收件人已取件", "en": "Picked up"},
    "evt.locker.pickup_unconfirmed": {"zh": "取件未确认，需检查", "en": "Pickup not confirmed, check"},
    "evt.locker.retrieve": {"zh": "快递员取回", "en": "Taken out by courier"},
    "evt.locker.return_dropoff": {"zh": "退件已放入", "en": "Return dropped off"},
    "evt.locker.deposit_aborted": {"zh": "投递取消", "en": "Delivery cancelled"},
    "evt.locker.inspect_needed": {"zh": "需检查", "en": "Check needed"},
    "evt.locker.remote_open": {"zh": "远程开门", "en": "Opened remotely"},
    "evt.locker.overdue": {"zh": "逾期未取", "en": "Not collected in time"},
    "evt.unknown": {"zh": "记录：{type}", "en": "Record: {type}"},
    # upstream sync
    "sync.backlog": {"zh": "待上传 {n} 条（{size}）", "en": "{n} events waiting ({size})"},
    "sync.oldest": {"zh": "最早的一条是 {ago}收到的", "en": "oldest received {ago}"},
    "sync.all_sent": {"zh": "全部已上传", "en": "Everything uploaded"},
    "sync.last": {"zh": "上次上传：{ago}", "en": "Last upload: {ago}"},
    "sync.never": {"zh": "从未", "en": "never"},
    "sync.behind_note": {"zh": "网络中断时数据安全保存在网关上，恢复后自动上传",
                         "en": "While the link is down, data is kept safe on the gateway "
                               "and uploads by itself when it returns"},
    # times
    "just_now": {"zh": "刚刚", "en": "just now"},
    "ago": {"zh": "{d}前", "en": "{d} ago"},
    "dur.s": {"zh": "{s} 秒", "en": "{s} s"},
    "dur.m": {"zh": "{m} 分钟", "en": "{m} min"},
    "dur.hm": {"zh": "{h} 小时 {m} 分钟", "en": "{h} h {m} min"},
    "dur.dh": {"zh": "{d} 天 {h} 小时", "en": "{d} d {h} h"},
    # errors
    "err.db": {"zh": "暂时读不到网关数据库：{detail}", "en": "Cannot read the gateway database: {detail}"},
    "err.not_found": {"zh": "没有这个页面", "en": "No such page"},
}


class _Blank(dict):
    """Format mapping that shows "?" for a field a device left out, so an
    alarm without its usual details still reads as a sentence."""

    def __missing__(self, key: str) -> str:
        return "?"


def t(key: str, lang: str, /, **kw: object) -> str:
    """Text for ``key`` in ``lang``; raises KeyError for a key not in the
    catalogue so a typo fails the tests instead of showing a blank.

    ``key`` and ``lang`` are positional-only: the fields come from devices
    (an alarm body's keys), and a device that sends a field named ``lang``
    or ``key`` must fill ``{lang}``/``{key}`` at most, never replace the
    formatter's own arguments (issue 11, finding 3: one such alarm made the
    whole status page answer 500). Values are substituted, never
    re-formatted, so a ``{`` in device text is shown as sent.
    设备字段只作为占位内容，不能覆盖格式化函数自己的参数。"""
    return TEXT[key][lang].format_map(_Blank(kw))


def fields(body: dict[str, object]) -> dict[str, object]:
    """Device-sent fields that may fill a catalogue text: string keys only
    (``**`` needs them), bounded in number so a 10,000-key body costs nothing."""
    out: dict[str, object] = {}
    for k, v in body.items():
        if isinstance(k, str) and len(out) < 64:
            out[k] = v
    return out


def has(key: str) -> bool:
    return key in TEXT
