"""The device layout: every path edgekit uses on a device, the unit's name and the stamp's name. One place."""

from __future__ import annotations

PREFIX = "/opt/edgekit"
INSTALL_ROOT = f"{PREFIX}/llama.cpp"          # <version>-<flags hash>/ per build
CURRENT = f"{INSTALL_ROOT}/current"            # the build the service runs (a symlink, switched atomically)
PREVIOUS = f"{INSTALL_ROOT}/previous"
BUILD_ROOT = f"{PREFIX}/build"
MODELS_DIR = f"{PREFIX}/models"
LORA_DIR = f"{PREFIX}/loras"                    # LoRA adapters, <sha256[:12]>-<file> (removed with the install)
GATE_DIR = f"{PREFIX}/gate"                    # the tiny GGUF the build gate runs

ETC_DIR = "/etc/edgekit"
ENV_PATH = f"{ETC_DIR}/llama-server.env"
API_KEY_PATH = f"{ETC_DIR}/api-key"
PRESET_PATH = f"{ETC_DIR}/models.ini"           # router mode: one section per model (llama-server --models-preset)

STATE_DIR = "/var/lib/edgekit"                 # what edgekit learned about the device (root only)
CPU_REFUSED = f"{STATE_DIR}/cpu-refused"       # CPU levels whose build failed the gate here, one per line
HEALTHY = f"{STATE_DIR}/last-healthy.json"     # the last state a provision ended healthy in
HEALTHY_DIR = f"{STATE_DIR}/last-healthy"      # copies of its env file and unit
LAST_ROLLBACK = f"{STATE_DIR}/last-rollback.json"   # the last automatic rollback: what failed, when, why, back to what

CACHE_DIR = "/var/cache/edgekit"
SOURCE_CACHE = f"{CACHE_DIR}/src"
PACK_DIR = f"{CACHE_DIR}/packs"
CCACHE_DIR = f"{CACHE_DIR}/ccache"
LOG_DIR = "/var/log/edgekit"

UNIT_NAME = "edgekit-llama-server"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}.service"
SERVICE_USER = "edgekit"
GPU_GROUPS = ("video", "render")               # the service user joins those the device has (Jetson GPU nodes)
STAMP_NAME = "build-stamp.json"
GATE_NAME = "gate.json"                        # the gate's verdict for one build on this device

# Jetson tuning (edgekit.tuning): what edgekit changes there and where it records the values it found first
TUNING_DIR = f"{STATE_DIR}/tuning"             # <setting>.json: the original value, written once, before the change
CLOCKS_STORE = f"{TUNING_DIR}/l4t_dfs.conf"    # `jetson_clocks --store` before edgekit pinned the clocks
CLOCKS_UNIT_NAME = "edgekit-jetson-clocks"     # oneshot: jetson_clocks at every boot, before the server
CLOCKS_UNIT_PATH = f"/etc/systemd/system/{CLOCKS_UNIT_NAME}.service"
NVPMODEL_CONF = "/etc/nvpmodel.conf"           # the board's own power modes (NVIDIA's, read only)
NVPMODEL_STATUS = "/var/lib/nvpmodel/status"   # 'pmode:000N': the mode nvpmodel.service applies at boot
ZRAM_UNIT = "nvzramconfig.service"             # JetPack's zram swap set-up
SWAP_FILE = "/swapfile"                        # the default --swap path (refused on eMMC/SD without force)

# the board + server metrics exporter (edgekit.exporter): its own zipapp (root's), token and unit
EXPORTER_DIR = f"{PREFIX}/exporter"
EXPORTER_PYZ = f"{EXPORTER_DIR}/edgekit-exporter.pyz"
EXPORTER_TOKEN = f"{ETC_DIR}/exporter-token"
EXPORTER_UNIT = "edgekit-exporter"
EXPORTER_UNIT_PATH = f"/etc/systemd/system/{EXPORTER_UNIT}.service"
