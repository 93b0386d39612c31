// Command go-wait is the Go baseline of the customtask-sdk benchmark: the "Wait" custom
// task controller written the way Tekton's own test controller
// (test/custom-task-ctrls/wait-task-beta) is, on knative's injection (sharedmain) and
// Tekton's generated CustomRun reconciler, tuned only so that it can run out of cluster
// next to other controllers and is not throttled by client-go's rate limiter.
//
//	go-wait -kubeconfig=$KUBECONFIG -disable-ha -namespace=bench -threads-per-controller=32
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"knative.dev/pkg/controller"
	"knative.dev/pkg/injection"
	"knative.dev/pkg/injection/sharedmain"
	"knative.dev/pkg/signals"
)

const (
	controllerName = "wait-task-controller"
	// The default of -threads-per-controller (knative's own default is 2).
	defaultThreads = 32
	// Client-side rate limits used unless -kube-api-qps / -kube-api-burst (or KUBE_API_QPS /
	// KUBE_API_BURST) are given. knative's default is 5 QPS / 10 burst per controller, which
	// would cap the benchmark at the client rather than at the apiserver.
	defaultQPS   = 500
	defaultBurst = 1000
)

func main() {
	controller.DefaultThreadsPerController = defaultThreads
	if val, ok := os.LookupEnv("THREADS_PER_CONTROLLER"); ok {
		n, err := strconv.Atoi(val)
		if err != nil {
			log.Fatalf("failed to parse value %q of THREADS_PER_CONTROLLER: %v", val, err)
		}
		controller.DefaultThreadsPerController = n
	}
	flag.IntVar(&controller.DefaultThreadsPerController, "threads-per-controller",
		controller.DefaultThreadsPerController, "Workers (goroutines) reconciling CustomRuns.")
	namespace := flag.String("namespace", corev1.NamespaceAll,
		"Namespace to watch CustomRuns in; all namespaces when empty.")
	disableHA := flag.Bool("disable-ha", false,
		"Disable leader election (bucketed high availability).")
	probesPort := flag.Int("probes-port", envInt("PROBES_PORT", 0),
		"Serve /health and /readiness on this port (default $PROBES_PORT; 0: no probes server).")

	// Parses the flags, including -kubeconfig, -kube-api-qps and -kube-api-burst.
	cfg := injection.ParseAndGetRESTConfigOrDie()
	if cfg.QPS == 0 {
		cfg.QPS = defaultQPS
	}
	if cfg.Burst == 0 {
		cfg.Burst = defaultBurst
	}

	// Out of cluster: sharedmain reads config-logging and config-observability from
	// SYSTEM_NAMESPACE, and listens for profiling (PROFILING_PORT, default 8008) and
	// Prometheus metrics (METRICS_PROMETHEUS_PORT, default 9090, because Tekton's
	// config-observability asks for prometheus). Pick free loopback ports unless told, so
	// that several controllers can run on one machine.
	setenvDefault("SYSTEM_NAMESPACE", "tekton-pipelines")
	setenvDefault("PROFILING_PORT", freePort())
	setenvDefault("METRICS_PROMETHEUS_PORT", freePort())
	setenvDefault("METRICS_PROMETHEUS_HOST", "127.0.0.1")

	ctx := injection.WithNamespaceScope(signals.NewContext(), *namespace)
	if *disableHA {
		ctx = sharedmain.WithHADisabled(ctx)
	}
	// knative's own probes server always binds :8080; serve ours on a chosen port instead.
	ctx = sharedmain.WithHealthProbesDisabled(ctx)
	if *probesPort > 0 {
		go serveProbes(*probesPort)
	}

	sharedmain.MainWithConfig(ctx, controllerName, cfg, newController)
}

func serveProbes(port int) {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }
	mux.HandleFunc("/health", ok)
	mux.HandleFunc("/readiness", ok)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	log.Fatal(http.ListenAndServe(addr, mux)) // #nosec G114 -- loopback probes only
}

func envInt(key string, fallback int) int {
	if val := os.Getenv(key); val != "" {
		n, err := strconv.Atoi(val)
		if err != nil {
			log.Fatalf("failed to parse value %q of %s: %v", val, key, err)
		}
		return n
	}
	return fallback
}

func setenvDefault(key, value string) {
	if os.Getenv(key) == "" {
		if err := os.Setenv(key, value); err != nil {
			log.Fatalf("setenv %s: %v", key, err)
		}
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatalf("no free port: %v", err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
