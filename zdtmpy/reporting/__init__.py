"""What a run reports beyond pass/fail, for the tools users run it in.

* `properties`: the per-item facts (criu, kernel, mode, compression, flavor, stage times,
  image sizes, failing stage) as junit `user_properties`, and the session's criu facts;
* `records`: the JSON report format (`--zdtm-report`): one record per item, loading and
  merging reports of several shards, read as hostile input;
* `collector`: the pytest side that writes the JSON report (on the xdist controller);
* `summary`: the table and the comparison of two runs behind `zdtmpy report`;
* `shard`: splitting the selected items over N machines (`--zdtm-shard K/N`).
"""
