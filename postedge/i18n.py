"""User-facing text in Simplified Chinese and English.

Most couriers, clerks and testers read Simplified Chinese, so every message a
person sees comes from this catalogue in both languages. The language is
``--lang`` if given, else POSTEDGE_LANG, else the locale (``LANG=zh_CN...``
selects Chinese), else English.
"""

from __future__ import annotations

import os

LANGS = ("zh", "en")

CATALOG: dict[str, dict[str, str]] = {
    "valid": {"zh": "有效 {kind}：{value}", "en": "valid {kind}: {value}"},
    "invalid": {"zh": "无效：{reason_text}（{detail}）", "en": "invalid: {reason_text} ({detail})"},
    "reason.s10_format": {"zh": "不是 S10 邮件号格式", "en": "not in S10 item-id format"},
    "reason.s10_check_digit": {"zh": "S10 校验位错误", "en": "wrong S10 check digit"},
    "reason.s10_country": {"zh": "国家代码无效", "en": "unknown country code"},
    "reason.ean_format": {"zh": "不是 EAN/UPC 格式", "en": "not in EAN/UPC format"},
    "reason.ean_check_digit": {"zh": "EAN/UPC 校验位错误", "en": "wrong EAN/UPC check digit"},
    "reason.gs1_format": {"zh": "GS1 格式错误", "en": "malformed GS1 data"},
    "reason.gs1_unknown_ai": {"zh": "未知的 GS1 应用标识符", "en": "unknown GS1 application identifier"},
    "reason.gs1_length": {"zh": "GS1 字段长度错误", "en": "wrong GS1 field length"},
    "reason.gs1_check_digit": {"zh": "GS1 校验位错误", "en": "wrong GS1 check digit"},
    "reason.cn_format": {"zh": "不是中国邮政国内单号格式", "en": "not a China Post domestic waybill"},
    "reason.unrecognised": {"zh": "无法识别的条码", "en": "unrecognised code"},
    "reason.empty": {"zh": "没有数据", "en": "no data"},
    "reason.bad_chars": {"zh": "含有控制字符", "en": "contains control characters"},
    "kind.s10": {"zh": "国际邮件号 (S10)", "en": "UPU S10 item id"},
    "kind.ean13": {"zh": "EAN-13 商品条码", "en": "EAN-13"},
    "kind.ean8": {"zh": "EAN-8 商品条码", "en": "EAN-8"},
    "kind.upca": {"zh": "UPC-A 商品条码", "en": "UPC-A"},
    "kind.gtin14": {"zh": "GTIN-14", "en": "GTIN-14"},
    "kind.gtin": {"zh": "GS1 GTIN", "en": "GS1 GTIN"},
    "kind.sscc": {"zh": "SSCC 物流单元码", "en": "SSCC"},
    "kind.gs1": {"zh": "GS1 数据", "en": "GS1 element string"},
    "kind.cn_ems": {"zh": "国内 EMS 单号", "en": "China Post domestic EMS waybill"},
    "kind.cn_parcel": {"zh": "国内包裹单号", "en": "China Post domestic parcel waybill"},
    "demo.title": {"zh": "postedge 演示：快递柜固件 → Mosquitto → 网关 → SQLite",
                   "en": "postedge demo: locker firmware → Mosquitto → gateway → SQLite"},
    "demo.broker": {"zh": "已启动 Mosquitto，端口 {port}（带密码和 ACL）",
                    "en": "Mosquitto started on port {port} (passwords and ACL)"},
    "demo.gateway": {"zh": "网关已启动，数据库 {db}", "en": "gateway started, database {db}"},
    "demo.locker": {"zh": "快递柜固件在 MicroPython 上运行：{n} 个格口，堆 {heap}，模拟锁控板和面板",
                    "en": "locker firmware on MicroPython: {n} compartments, heap {heap}, "
                          "simulated lock board and panel"},
    "demo.credential": {"zh": "平台下发快递员凭证（签名指令）：{ok}",
                        "en": "platform provisions a courier credential (signed command): {ok}"},
    "demo.courier": {"zh": "快递员投递包裹：", "en": "a courier deposits a parcel:"},
    "demo.deposited": {"zh": "网关已存储投递事件：{parcel} 在 {cid} 号格口，取件码 {code}",
                       "en": "gateway stored the deposit: {parcel} in compartment {cid}, pickup code {code}"},
    "demo.recipient": {"zh": "收件人用取件码取件（网关设为提交前暂停）：",
                       "en": "the recipient picks up with the code (gateway set to pause before commit):"},
    "demo.kill": {"zh": "故障：网关收到 {n} 条事件后、提交前被 kill -9",
                  "en": "fault: gateway killed with SIGKILL after receiving {n} events, before committing"},
    "demo.restart": {"zh": "网关重启，Mosquitto 重新投递未确认的消息",
                     "en": "gateway restarted; Mosquitto redelivers the unacked messages"},
    "demo.stored": {"zh": "网关数据库中的事件：", "en": "events in the gateway database:"},
    "demo.summary": {"zh": "结果：存储 {stored} 条事件（交接事件 {custody} 条），重复 {dups} 条 —— {verdict}",
                     "en": "result: {stored} events stored ({custody} custody), {dups} duplicates "
                           "— {verdict}"},
    "demo.ok": {"zh": "每条事件恰好存储一次", "en": "every event stored exactly once"},
    "demo.fail": {"zh": "有事件丢失或重复！", "en": "events lost or duplicated!"},
    "status.outlet": {"zh": "网点 {outlet}", "en": "outlet {outlet}"},
    "status.devices": {"zh": "设备在线：{online}/{total}", "en": "devices online: {online}/{total}"},
    "status.backlog": {"zh": "待上传：{n} 条（{kb} KB），最早的在 {age}",
                       "en": "waiting to sync: {n} events ({kb} KB), oldest {age}"},
    "status.last_sync": {"zh": "上次同步：{when}", "en": "last sync: {when}"},
    "status.commands": {"zh": "待下发指令：{n} 条", "en": "commands waiting for devices: {n}"},
    "status.alarms": {"zh": "最近告警：{n} 条", "en": "recent alarms: {n}"},
    "never": {"zh": "从未", "en": "never"},
    "online": {"zh": "在线", "en": "online"},
    "offline": {"zh": "离线", "en": "offline"},
    "for": {"zh": "（自 {d}）", "en": "(since {d})"},
    "ago.s": {"zh": "{n} 秒前", "en": "{n} s ago"},
    "ago.m": {"zh": "{n} 分钟前", "en": "{n} min ago"},
    "ago.h": {"zh": "{n} 小时前", "en": "{n} h ago"},
    "ago.d": {"zh": "{n} 天前", "en": "{n} days ago"},
    "drained": {"zh": "已上传 {n} 条，剩余 {left} 条", "en": "synced {n} events, {left} left"},
    "enqueued": {"zh": "已排队：{id}", "en": "queued: {id}"},
    "provisioned": {"zh": "已为 {n} 台设备生成凭证和配置：{dir}",
                    "en": "credentials and configs for {n} devices written to {dir}"},
    "error": {"zh": "错误：{msg}", "en": "error: {msg}"},
    "sim.dashboard": {"zh": "实时看板：{url}", "en": "live dashboard: {url}"},
    "sim.written": {"zh": "已写入：{paths}", "en": "written: {paths}"},
}


def pick(lang: str | None = None) -> str:
    for cand in (lang, os.environ.get("POSTEDGE_LANG"), os.environ.get("LANG")):
        if cand:
            return "zh" if cand.lower().startswith("zh") else "en"
    return "en"


def t(key: str, lang: str, **kw: object) -> str:
    return CATALOG[key][lang].format(**kw)
