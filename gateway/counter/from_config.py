"""The counter desk a gateway's ``[counter]`` table describes (the gateway
service calls this when it starts its web server)."""

from __future__ import annotations

from pathlib import Path

from gateway.config import CounterConfig
from gateway.counter.acceptance import CounterDesk
from gateway.counter.printers import Printer
from gateway.counter.scale import Scale, serial_opener


def build_desk(cfg: CounterConfig, db: Path, outlet: str, base: Path | None = None) -> CounterDesk:
    def at(p: str) -> str:
        if base is None or "://" in p or p.startswith("file:") or Path(p).is_absolute():
            return p
        return str(base / p)

    scale = None
    if cfg.scale_url:
        scale = Scale(serial_opener(at(cfg.scale_url), cfg.scale_baud), cfg.scale_format, cfg.scale_unit,
                      window_s=cfg.stable_window_s, tolerance_g=cfg.stable_tolerance_g)
    label = Printer("label", at(cfg.label_url), cfg.label_language, cfg.label_baud) if cfg.label_url else None
    receipt = Printer("receipt", at(cfg.receipt_url), "escpos", cfg.receipt_baud) if cfg.receipt_url else None
    docs = Path(at(cfg.docs_dir)) if cfg.docs_dir else Path(db).parent / "counter"
    return CounterDesk(Path(db), outlet, docs, cfg.platform_keys, scale, label, receipt,
                       counter_id=cfg.counter_id, scale_timeout_s=cfg.scale_timeout_s,
                       login_kinds=tuple(cfg.login_kinds))
