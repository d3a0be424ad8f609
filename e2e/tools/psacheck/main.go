// Command psacheck evaluates the pods of Kubernetes objects against a Pod Security Standards
// level with the upstream k8s.io/pod-security-admission library (the same checks the API
// server's PodSecurity admission runs).
//
// Usage: psacheck [-level restricted] [-version latest] < objects.yaml
//
// Reads a multi-document YAML stream; every Pod, and every object with a pod template
// (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, PodTemplate), is checked.
// Prints one line per pod-bearing object and exits 1 when any of them is not allowed, 2 on
// unreadable input.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"
)

// object holds the fields of any workload kind that can carry a pod spec.
type object struct {
	Kind     string            `json:"kind"`
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     struct {
		corev1.PodSpec
		Template    *corev1.PodTemplateSpec `json:"template"`
		JobTemplate *struct {
			Spec struct {
				Template corev1.PodTemplateSpec `json:"template"`
			} `json:"spec"`
		} `json:"jobTemplate"`
	} `json:"spec"`
	Template *corev1.PodTemplateSpec `json:"template"` // kind PodTemplate
}

// podOf returns the pod metadata and spec an object carries, or nil when it has none.
func podOf(o *object) (*metav1.ObjectMeta, *corev1.PodSpec) {
	switch {
	case o.Kind == "Pod":
		return &o.Metadata, &o.Spec.PodSpec
	case o.Kind == "PodTemplate" && o.Template != nil:
		return &o.Template.ObjectMeta, &o.Template.Spec
	case o.Spec.JobTemplate != nil:
		t := &o.Spec.JobTemplate.Spec.Template
		return &t.ObjectMeta, &t.Spec
	case o.Spec.Template != nil && len(o.Spec.Template.Spec.Containers) > 0:
		return &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
	}
	return nil, nil
}

func main() {
	level := flag.String("level", "restricted", "Pod Security Standards level: privileged, baseline or restricted")
	version := flag.String("version", "latest", "policy version, e.g. v1.36 or latest")
	flag.Parse()
	lvl, err := api.ParseLevel(*level)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ver, err := api.ParseVersion(*version)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	lv := api.LevelVersion{Level: lvl, Version: ver}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(os.Stdin))
	checked, failed := 0, 0
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "reading input:", err)
			os.Exit(2)
		}
		var o object
		if err := yaml.Unmarshal(doc, &o); err != nil {
			fmt.Fprintln(os.Stderr, "parsing object:", err)
			os.Exit(2)
		}
		meta, spec := podOf(&o)
		if spec == nil {
			continue
		}
		checked++
		name := fmt.Sprintf("%s %s/%s", o.Kind, o.Metadata.Namespace, o.Metadata.Name)
		result := policy.AggregateCheckResults(evaluator.EvaluatePod(lv, meta, spec))
		if result.Allowed {
			fmt.Printf("ok    %s: %s\n", name, lv.String())
			continue
		}
		failed++
		fmt.Printf("FAIL  %s: violates PodSecurity %q: %s\n", name, lv.String(), result.ForbiddenDetail())
	}
	fmt.Printf("%d pod-bearing objects checked, %d not allowed at %s\n", checked, failed, lv.String())
	if checked == 0 {
		fmt.Fprintln(os.Stderr, "no pod-bearing object in the input")
		os.Exit(2)
	}
	if failed > 0 {
		os.Exit(1)
	}
}
