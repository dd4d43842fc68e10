"""Memory of ``hpinfer serve`` under the two denial-of-service requests of issue 18, with default settings:
the 40 KB image asking for a 22000 px detector input (``textDetLimitSideLen`` 4096, ``min``), then 8 copies at
once of a 20-page PDF of 3158 pt square pages (2.9 KB), default options. Reports the server's peak RSS
(VmHWM, reset after warm-up), its RSS warm and once idle again, wall times and statuses.

    python benchmarks/serve_memory.py [--copies 8] [--pages 20] [--json out.json]

Warm-up: two requests of a 2-page copy of the PDF and one image, so that threads, heaps and engine shapes exist.
"""

from __future__ import annotations

import argparse
import base64
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import ROOT, Server, environment, write_report  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from test_serving_support import blank_pdf  # noqa: E402

SIDE_PT = 3158  # 6316 px a side at 144 dpi: 40 MP, just under --max_pixels


def status_bytes(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(key + ":"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    image = base64.b64encode((ROOT.parent / "shared" / "data" / "images" / "paragraph_en.jpg").read_bytes()).decode()
    document = blank_pdf(args.pages, SIDE_PT)
    report: Dict[str, Any] = {"environment": environment(), "pdf_bytes": len(document)}
    # All 8 copies run to the end (on 2 busy cores the last ones wait minutes for budget and would get 503 after
    # the default 60 s): what is measured is the memory with all of them admitted.
    with Server("OCR", "--request_timeout_s", "3600", "--max_queue_wait_s", "3600") as server:
        url, pid = server.url + "/ocr", server.process.pid
        for body in ({"file": base64.b64encode(blank_pdf(2, SIDE_PT)).decode()},) * 2 + ({"file": image},):
            assert httpx.post(url, json=body, timeout=600).status_code == 200
        time.sleep(2)
        report["rss_warm_mb"] = status_bytes(pid, "VmRSS") / 2**20
        Path(f"/proc/{pid}/clear_refs").write_text("5")

        start = time.monotonic()
        answer = httpx.post(url, json={"file": image, "textDetLimitSideLen": 4096, "textDetLimitType": "min"}, timeout=3600)
        report["dos_image"] = {"status": answer.status_code, "seconds": round(time.monotonic() - start, 1),
                               "clamps": answer.json()["result"].get("clamps"),
                               "peak_rss_mb": status_bytes(pid, "VmHWM") / 2**20}
        body = {"file": base64.b64encode(document).decode()}
        answers: list = []
        start = time.monotonic()
        threads = [threading.Thread(target=lambda: answers.append(httpx.post(url, json=body, timeout=3600)))
                   for _ in range(args.copies)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        report["dos_pdfs"] = {"copies": args.copies, "pages": args.pages, "statuses": [a.status_code for a in answers],
                              "seconds": round(time.monotonic() - start, 1)}
        report["peak_rss_mb"] = status_bytes(pid, "VmHWM") / 2**20
        time.sleep(5)
        report["rss_idle_after_mb"] = status_bytes(pid, "VmRSS") / 2**20
        report["rss_after_vs_warm_pct"] = round((report["rss_idle_after_mb"] / report["rss_warm_mb"] - 1) * 100, 1)
    write_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
