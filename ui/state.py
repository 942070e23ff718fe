"""Session-state keys of the pages that keep their own widget state (one place, so a page and its tests agree).

The keys of what a session holds across pages (model, data, recipe, run) are `core.session`'s.
"""

# The Cost page.
COST_RUN_KEY = "fw_cost_run"
COST_BATCH_KEY = "fw_cost_batch"
COST_PRICING_KEY = "fw_cost_pricing"  # "per core-hour" | "per instance-hour"
COST_PRICE_KEY = "fw_cost_price_per_core_hour"
COST_INSTANCE_PRICE_KEY = "fw_cost_instance_price"
COST_CORES_KEY = "fw_cost_cores"
COST_WATTS_KEY = "fw_cost_watts_per_core"
COST_GRID_KEY = "fw_cost_grid_g_per_kwh"
COST_RPS_KEY = "fw_cost_requests_per_second"
COST_DEVICES_KEY = "fw_cost_devices"
COST_DEVICE_FILTER_KEY = "fw_cost_device_filter"
# The Insight page.
SCAN_RUN_KEY = "fw_insight_scan_run"  # run id of the sensitivity scan shown
TUNE_RUN_KEY = "fw_insight_tune_run"  # run id of the tuning job shown
DIAG_RUN_KEY = "fw_insight_diag_run"  # run id of the profile (diagnose) job shown
SCALING_RUN_KEY = "fw_insight_scaling_run"  # run id of the scaling (diagnose) job shown
TOPK_KEY = "insight_topk"  # the k of "keep the top-k in float"
NOTICE_KEY = "fw_insight_notice"  # one-shot message after a rerun
