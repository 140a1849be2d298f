#!/usr/bin/env bash
# Checks the scrape config and the Grafana dashboard end to end: rsd serve (with its OpenAI front) on
# ports 18000-18002/19000, a real Prometheus (Debian: apt-get install prometheus) scraping it every second,
# AIPerf load through the front (scripts/bench_aiperf.sh), then every query of
# docs/grafana/rsd-dashboard.json through Prometheus's HTTP API. For people, not CI. Usage: scripts/check_dashboard.sh
set -u
cd "$(dirname "$0")/.."
P=$(mktemp -d)
.venv/bin/rsd serve --http-port 18000 --grpc-port 18001 --metrics-port 18002 --openai-port 19000 --log-file $P/serve.log > $P/serve.out 2>&1 &
SERVE=$!
for i in $(seq 1 150); do curl -sf 127.0.0.1:19000/health > /dev/null && break; sleep 2; done
echo "health: $(curl -s 127.0.0.1:19000/health)"
cat > $P/prom.yml <<Y
global: {scrape_interval: 1s}
scrape_configs:
  - job_name: rsd-triton
    scrape_interval: 1s
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:18002"]
Y
promtool check config $P/prom.yml
prometheus --config.file=$P/prom.yml --storage.tsdb.path=$P/data --web.listen-address=127.0.0.1:19090 > $P/prom.log 2>&1 &
PROM=$!
curl -s 127.0.0.1:19000/v1/chat/completions -H 'Content-Type: application/json' -d '{"model": "rsd", "messages": [{"role": "user", "content": "What is 12 + 35?"}], "stream": true}' > $P/curl.txt
echo "curl chunks: $(grep -c '^data:' $P/curl.txt)"; head -c 600 $P/curl.txt; echo
timeout 600 scripts/bench_aiperf.sh --front http://127.0.0.1:19000 --triton 127.0.0.1:18001 --triton-metrics http://127.0.0.1:18002/metrics --concurrency 4 --requests 32 --osl 48 --out runs/bench-aiperf/dashboard-check
sleep 4
.venv/bin/python - <<'PY'
import json, urllib.parse, urllib.request
d = json.load(open("docs/grafana/rsd-dashboard.json"))
for p in d["panels"]:
    for t in p["targets"]:
        e = t["expr"].replace("$__rate_interval", "2m").replace("$method", ".*")
        r = json.load(urllib.request.urlopen("http://127.0.0.1:19090/api/v1/query?" + urllib.parse.urlencode({"query": e}), timeout=10))
        res = r["data"]["result"]
        vals = ", ".join(f"{'/'.join(v for k, v in sorted(x['metric'].items()))}={float(x['value'][1]):.4g}" for x in res[:4])
        print(f"{p['title']} [{t['refId']}]: {r['status']} {len(res)} series: {vals}")
PY
kill $PROM; kill -TERM $SERVE; wait $SERVE; echo "serve exit $?"
