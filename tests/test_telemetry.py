"""Telemetry parsers on real captured output (tests/fixtures/captured.py), Prometheus text, Sample JSON."""

from __future__ import annotations

import datetime
import re

import pytest

from edgekit.telemetry import prometheus
from edgekit.telemetry.jtop import from_stats, parse_old_api_as_printed
from edgekit.telemetry.procfs import cpu_loads, memory_fields, parse_meminfo, parse_stat
from edgekit.telemetry.sample import Sample
from edgekit.telemetry.tegrastats import parse_line
from tests.fixtures import captured as cap

TEGRASTATS = {name: getattr(cap, name) for name in dir(cap) if name.startswith("TEGRASTATS_")}


@pytest.mark.parametrize("name", sorted(TEGRASTATS))
def test_every_captured_tegrastats_line_parses_consistently(name):
    line = TEGRASTATS[name]
    s = parse_line(line, time=123.0)
    assert s.source == "tegrastats" and s.time == 123.0
    used, total = re.search(r"RAM (\d+)/(\d+)MB", line).groups()
    assert (s.ram_used_mb, s.ram_total_mb) == (float(used), float(total))
    cores = re.search(r"CPU \[([^\]]*)\]", line)[1].split(",")
    assert len(s.cpu_load_pct) == len(cores)
    assert [c is None for c in s.cpu_load_pct] == [c.strip() == "off" for c in cores]
    assert s.gpu_load_pct == float(re.search(r"GR3D_FREQ (\d+)%", line)[1])
    # every temperature printed is there, except the -256C "sensor off" ones
    printed = {k.lower(): float(v) for k, v in re.findall(r"(\w+)@(-?[\d.]+)C", line)}
    assert s.temps_c == {k: v for k, v in printed.items() if v > -256}
    assert all(v > -256 for v in s.temps_c.values())
    assert "NC" not in s.power_mw and "RAM" not in s.power_mw and "SWAP" not in s.power_mw
    if s.power_total_mw is not None:
        assert s.power_total_from in ("VDD_IN", "POM_5V_IN", "sum of rails")
        if s.power_total_from == "sum of rails":
            assert s.power_total_mw == sum(s.power_mw.values())
    assert Sample.from_json(s.to_json()) == s


def test_orin_nano_jp6_under_load():
    s = parse_line(cap.TEGRASTATS_ORIN_NANO_JP6_LOAD)
    assert (s.gpu_load_pct, s.gpu_freq_mhz) == (99.0, 612.0)            # GR3D_FREQ 99%@[612]
    assert (s.emc_load_pct, s.emc_freq_mhz) == (61.0, 2133.0)
    assert (s.swap_used_mb, s.swap_total_mb) == (369.0, 3810.0)
    assert s.cpu_load_pct[:2] == [38.0, 2.0] and s.cpu_freq_mhz[:2] == [1497.0, 729.0]
    assert s.temps_c["gpu"] == 58.625 and s.temps_c["tj"] == 58.312
    assert s.power_total_mw == 16321.0 and s.power_total_from == "VDD_IN"   # cur, not the 11204 average
    assert s.power_mw == {"VDD_CPU_GPU_CV": 7104.0, "VDD_SOC": 3120.0}
    assert s.temp_max_c == 58.625


def test_gr3d_shapes_and_no_sudo():
    assert parse_line(cap.TEGRASTATS_NANO_JP4_IDLE).gpu_freq_mhz == 76.0                  # 0%@76
    assert parse_line(cap.TEGRASTATS_AGX_ORIN_64GB_JP5_LOAD).gpu_freq_mhz == 407.0        # 14%@[407,407]
    assert parse_line(cap.TEGRASTATS_AGX_ORIN_64GB_JP5_LOAD).gpu_load_pct == 14.0
    no_sudo = parse_line(cap.TEGRASTATS_ORIN_NANO_JP6_NO_SUDO)                            # GR3D_FREQ 0%
    assert (no_sudo.gpu_load_pct, no_sudo.gpu_freq_mhz) == (0.0, None)
    assert (no_sudo.emc_load_pct, no_sudo.emc_freq_mhz) == (None, None)                  # not printed without root


def test_jp4_rails_without_units_and_input_rail_not_first():
    s = parse_line(cap.TEGRASTATS_NANO_JP4_LOAD)
    assert s.power_total_from == "POM_5V_IN" and s.power_total_mw == 3227.0
    assert s.power_mw == {"POM_5V_GPU": 8949.0, "POM_5V_CPU": 3148.0}
    xavier = parse_line(cap.TEGRASTATS_XAVIER_NX_JP4)
    assert xavier.power_total_mw == 6140.0 and xavier.power_mw["VDD_SOC"] == 1074.0


def test_jp5_uppercase_temps_and_off_sensors():
    s = parse_line(cap.TEGRASTATS_AGX_ORIN_64GB_JP5_IDLE)
    assert "cv0" not in s.temps_c and "gpu" not in s.temps_c      # CV0@-256C GPU@-256C: switched off
    assert s.temps_c["cpu"] == 42.593 and s.temps_c["tboard"] == 32.0


def test_agx_orin_without_vdd_in_sums_rails_excluding_nc():
    s = parse_line(cap.TEGRASTATS_AGX_ORIN_64GB_JP5_IDLE)
    assert s.power_total_from == "sum of rails"
    assert s.power_mw == {"VDD_GPU_SOC": 2399.0, "VDD_CPU_CV": 400.0, "VIN_SYS_5V0": 4032.0,
                          "VDDQ_VDD2_1V8AO": 301.0}
    assert s.power_total_mw == 2399 + 400 + 4032 + 301


def test_agx_xavier_bare_rail_names_do_not_collide_with_temps():
    s = parse_line(cap.TEGRASTATS_AGX_XAVIER_JP4)
    assert s.temps_c["gpu"] == 37.5 and s.temps_c["cpu"] == 37.5
    assert s.power_mw == {"GPU": 0.0, "CPU": 311.0, "SOC": 932.0, "CV": 0.0, "VDDRQ": 621.0, "SYS5V": 1482.0}
    assert s.cpu_load_pct[4:] == [None] * 4                        # 'off' cores


def test_jp7_three_value_rails_and_cur_max_temps():
    s = parse_line(cap.TEGRASTATS_AGX_ORIN_64GB_JP7_CORES_OFF)
    assert s.temps_c["cpu"] == 50.718
    assert s.power_mw["VDD_CPU_CV"] == 2643.0
    assert s.cpu_load_pct.count(None) == 4


def test_no_rails_means_no_power_not_zero():
    s = parse_line(cap.TEGRASTATS_XAVIER_NX_JP4_20W_NO_RAILS)
    assert s.power_total_mw is None and s.power_mw == {}


def test_pmic_placeholder_is_not_the_hottest_sensor():
    s = parse_line(cap.TEGRASTATS_XAVIER_NX_JP4)         # PMIC@100C is a fixed trip value
    assert s.temps_c["pmic"] == 100.0
    assert s.temp_max_c == 33.5


def test_not_a_tegrastats_line():
    with pytest.raises(ValueError):
        parse_line("tegrastats: command not found")


def _jtop(text):
    return eval(text, {"datetime": datetime})  # the captures are repr() of jtop's dicts


def test_jtop_stats_4x():
    stats = _jtop(cap.JTOP_STATS_ORIN_NANO_4GB_JP6)
    s = from_stats(stats, memory=_jtop(cap.JTOP_MEMORY_ORIN_NANO_4GB_JP6), gpu=_jtop(cap.JTOP_GPU_ORIN_NANO_4GB_JP6))
    assert s.source == "jtop" and s.time == stats["time"].timestamp()
    assert s.cpu_load_pct == [18.0, 39.0, 9.0, 9.0, 5.0, 3.0]
    assert s.gpu_load_pct == 4.8 and s.gpu_freq_mhz == 306.0
    assert s.ram_used_mb == pytest.approx(1687344 / 1024) and s.ram_total_mb == pytest.approx(3688892 / 1024)
    assert s.emc_load_pct == 0.0 and s.emc_freq_mhz == 2133.0
    assert "cv0" not in s.temps_c and s.temps_c["gpu"] == 46.406               # -256 = off
    assert s.power_mw == {"VDD_CPU_GPU_CV": 1064.0, "VDD_SOC": 1540.0}
    assert (s.power_total_mw, s.power_total_from) == (5133.0, "Power TOT")
    assert s.jetson_clocks is False and s.power_mode == "25W"
    assert "APE" not in s.to_json()                                              # 'OFF' engines not invented


def test_jtop_stats_alone_gives_ram_only_with_a_total():
    stats = _jtop(cap.JTOP_STATS_ORIN_NANO_4GB_JP6)
    assert from_stats(stats).ram_used_mb is None                                 # fraction, no total: unknown
    s = from_stats(stats, ram_total_mb=3602.4)
    assert s.ram_used_mb == pytest.approx(stats["RAM"] * 3602.4)


def test_jtop_old_api():
    s = from_stats(parse_old_api_as_printed(cap.JTOP_STATS_XAVIER_OLD_API_AS_PRINTED))
    assert len(s.cpu_load_pct) == 8 and s.cpu_load_pct[6] == 14.0
    assert s.ram_used_mb == pytest.approx(1745160 / 1024)                        # kB in 2.x/3.x
    assert s.emc_load_pct is None                                                # 1745160 is not a %
    assert (s.power_total_mw, s.power_total_from) == (4859.0, "power cur")
    assert s.temps_c["tdiode"] == 49.25 and s.power_mode == "MAXN" and s.jetson_clocks is False


def test_procfs_parsers():
    before = parse_stat("cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 40 0 0 0 0 0 0\n")
    after = parse_stat("cpu  40 0 10 110 0 0 0 0 0 0\ncpu0 35 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 70 0 0 0 0 0 0\n")
    assert cpu_loads(before, after) == [100.0, 0.0]
    assert cpu_loads(before, {0: after[0], 2: (1, 1)}) == [100.0, None, None]   # cpu1 went offline, cpu2 new
    mem = parse_meminfo("MemTotal:  8000000 kB\nMemFree: 1000 kB\nMemAvailable: 6000000 kB\n"
                        "SwapTotal: 2048 kB\nSwapFree: 1024 kB\n")
    assert memory_fields(mem) == {"ram_total_mb": 7812.5, "ram_used_mb": 1953.1,
                                  "swap_total_mb": 2.0, "swap_used_mb": 1.0}


def test_prometheus_text():
    s = parse_line(cap.TEGRASTATS_ORIN_NANO_JP6_LOAD)
    s.server_rss_mb = 512.0
    text = prometheus.render(s, device='nano"1')
    assert 'edgekit_gpu_load_percent{device="nano\\"1"} 99' in text
    assert 'edgekit_power_watts{device="nano\\"1",rail="VDD_SOC"} 3.12' in text
    assert 'edgekit_power_total_watts{device="nano\\"1",from="VDD_IN"} 16.321' in text
    assert f'edgekit_llama_server_resident_bytes{{device="nano\\"1"}} {512 * 2**20}' in text
    assert text.count("# TYPE edgekit_cpu_load_percent gauge") == 1
    for line in text.splitlines():
        assert line.startswith("#") or re.match(r'^[a-z_]+(\{[^}]*\})? -?[\d.e+]+$', line), line
    procfs_only = prometheus.render(Sample(source="procfs", ram_used_mb=1.0, ram_total_mb=2.0))
    assert "edgekit_gpu" not in procfs_only and "edgekit_power" not in procfs_only  # unknown: absent, not zero
