# Sourced by the bench scripts: starts a release control plane (CPU 1) and one
# data plane with one worker (CPU 0) on fixed loopback ports, and `say` sends
# one registry command and prints its reply. Needs $work (a scratch dir).

start_portico() {
  taskset -c 1 ./target/release/portico-cp --registry-listen 127.0.0.1:18181 --grpc-listen 127.0.0.1:18182 \
    --admin-listen 127.0.0.1:18183 --data-dir "$work/cp" > "$work/cp.log" 2>&1 &
  sleep 0.5
  taskset -c 0 ./target/release/portico-dp --control-plane http://127.0.0.1:18182 --listen 127.0.0.1:18080 \
    --admin-listen 127.0.0.1:18184 --threads 1 > "$work/dp.log" 2>&1 &
  for _ in $(seq 100); do curl -sf http://127.0.0.1:18184/ready >/dev/null && break; sleep 0.1; done
  exec 3<>/dev/tcp/127.0.0.1/18181
}

say() { echo "$1" >&3; read -r reply <&3; echo "$reply"; }
