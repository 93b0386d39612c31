package main

import (
	"context"
	"time"

	"github.com/tektoncd/pipeline/pkg/apis/pipeline/v1beta1"
	customruninformer "github.com/tektoncd/pipeline/pkg/client/injection/informers/pipeline/v1beta1/customrun"
	customrunreconciler "github.com/tektoncd/pipeline/pkg/client/injection/reconciler/pipeline/v1beta1/customrun"
	tkncontroller "github.com/tektoncd/pipeline/pkg/controller"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"knative.dev/pkg/configmap"
	"knative.dev/pkg/controller"
	"knative.dev/pkg/logging"
	kreconciler "knative.dev/pkg/reconciler"
)

const (
	waitAPIVersion = "wait.customtask.dev/v1alpha1"
	waitKind       = "Wait"
)

// newController wires the reconciler to the CustomRun informer, as Tekton's
// wait-task-beta controller does.
func newController(ctx context.Context, _ configmap.Watcher) *controller.Impl {
	isWait := tkncontroller.FilterCustomRunRef(waitAPIVersion, waitKind)
	// Only runs that are ours and not done: a done run is never reconciled (nor written)
	// again, even if its generation changes.
	pending := func(obj interface{}) bool {
		return isWait(obj) && !obj.(*v1beta1.CustomRun).IsDone()
	}
	r := &Reconciler{Clock: clock.RealClock{}}
	impl := customrunreconciler.NewImpl(ctx, r, func(*controller.Impl) controller.Options {
		return controller.Options{AgentName: controllerName, PromoteFilterFunc: pending}
	})
	// Adds and updates of pending runs. Deletions need no work (no finalizer), and the
	// update that makes a run done (our own status write) is not enqueued again.
	customruninformer.Get(ctx).Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj interface{}) {
			if pending(obj) {
				impl.Enqueue(obj)
			}
		},
		UpdateFunc: func(_, obj interface{}) {
			if pending(obj) {
				impl.Enqueue(obj)
			}
		},
	})
	return impl
}

// Reconciler completes a Wait CustomRun once its `duration` param has elapsed.
//
// The generated reconciler (customrunreconciler) calls ReconcileKind on a copy of the
// cached run and, if the status changed, writes it once with UpdateStatus (PUT
// .../customruns/NAME/status), having set status.observedGeneration and the conditions'
// lastTransitionTime.
type Reconciler struct {
	Clock clock.PassiveClock
}

var _ customrunreconciler.Interface = (*Reconciler)(nil)

// ReconcileKind implements customrunreconciler.Interface.
func (c *Reconciler) ReconcileKind(ctx context.Context, r *v1beta1.CustomRun) kreconciler.Event {
	if r.IsDone() {
		return nil
	}
	logger := logging.FromContext(ctx)

	param := r.Spec.GetParam("duration")
	if param == nil || param.Value.StringVal == "" {
		r.Status.MarkCustomRunFailed("MissingDuration", "The duration param was not passed")
		return nil
	}
	duration, err := time.ParseDuration(param.Value.StringVal)
	if err != nil {
		r.Status.MarkCustomRunFailed("InvalidDuration", "The duration param was invalid: %v", err)
		return nil
	}

	now := c.Clock.Now()
	if !r.HasStarted() {
		r.Status.StartTime = &metav1.Time{Time: now}
	}
	elapsed := now.Sub(r.Status.StartTime.Time)
	if elapsed >= duration {
		// Sets completionTime too.
		r.Status.MarkCustomRunSucceeded("DurationElapsed", "")
		logger.Debugf("CustomRun %s/%s succeeded", r.Namespace, r.Name)
		return nil
	}
	r.Status.MarkCustomRunRunning("Running", "")
	return controller.NewRequeueAfter(duration - elapsed)
}
