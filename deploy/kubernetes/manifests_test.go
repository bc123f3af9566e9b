// Package kubernetes holds guacproxy's Kubernetes manifests. Its tests decode
// every manifest strictly into the Kubernetes API types and check that the
// pieces agree with each other and with guacproxy's configuration.
package kubernetes

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/guacproxy/guacproxy/config"
)

// Names the checks rely on.
const (
	guacproxyName = "guacproxy" // the guacproxy container
	webAppName    = "guacamole" // the Guacamole web application container
	kustomizeFile = "kustomization.yaml"
)

// manifests is every object declared in this folder.
type manifests struct {
	kustomization kustomization
	files         []string // every manifest file but kustomization.yaml
	namespaces    []*corev1.Namespace
	deployments   []*appsv1.Deployment
	services      []*corev1.Service
	configMaps    []*corev1.ConfigMap
	secrets       []*corev1.Secret
	policies      []*networkingv1.NetworkPolicy
}

// kustomization is the part of kustomization.yaml this folder uses. Decoding
// is strict, so a field added there must be added here.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
		Digest  string `json:"digest"`
	} `json:"images"`
}

// load decodes every YAML file in the folder. Unknown or misspelt fields,
// duplicate keys and kinds this test does not know are errors.
func load(t *testing.T) *manifests {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, networkingv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	decoder := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})

	names, err := filepath.Glob("*.y*ml")
	if err != nil {
		t.Fatal(err)
	}
	m := &manifests{}
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if name == kustomizeFile {
			if err := yaml.UnmarshalStrict(data, &m.kustomization); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		m.files = append(m.files, name)

		docs := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for i := 1; ; i++ {
			doc, err := docs.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if j, err := yaml.YAMLToJSON(doc); err == nil && string(j) == "null" {
				continue // only comments
			}
			obj, _, err := decoder.Decode(doc, nil, nil)
			if err != nil {
				t.Errorf("%s, document %d: %v", name, i, err)
				continue
			}
			if err := m.add(obj); err != nil {
				t.Errorf("%s, document %d: %v", name, i, err)
			}
		}
	}
	return m
}

// add files obj under its kind.
func (m *manifests) add(obj runtime.Object) error {
	switch o := obj.(type) {
	case *corev1.Namespace:
		m.namespaces = append(m.namespaces, o)
	case *appsv1.Deployment:
		m.deployments = append(m.deployments, o)
	case *corev1.Service:
		m.services = append(m.services, o)
	case *corev1.ConfigMap:
		m.configMaps = append(m.configMaps, o)
	case *corev1.Secret:
		m.secrets = append(m.secrets, o)
	case *networkingv1.NetworkPolicy:
		m.policies = append(m.policies, o)
	default:
		return fmt.Errorf("kind %s is not checked by this test; teach it first",
			obj.GetObjectKind().GroupVersionKind())
	}
	return nil
}

// pod returns the Deployment whose pod runs the guacproxy container, with
// that container and the web application's.
func (m *manifests) pod(t *testing.T) (d *appsv1.Deployment, proxy, webApp *corev1.Container) {
	t.Helper()
	for _, d := range m.deployments {
		proxy := container(&d.Spec.Template.Spec, guacproxyName)
		if proxy == nil {
			continue
		}
		webApp := container(&d.Spec.Template.Spec, webAppName)
		if webApp == nil {
			t.Fatalf("deployment %s runs %s but no %s container", d.Name, guacproxyName, webAppName)
		}
		return d, proxy, webApp
	}
	t.Fatalf("no deployment has a %s container", guacproxyName)
	return nil, nil, nil
}

func container(spec *corev1.PodSpec, name string) *corev1.Container {
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	return nil
}

// guacproxyConfig parses the configuration the guacproxy container is
// given: the file named by its --config argument, found in the ConfigMap
// mounted there. Every variable the container takes from a Secret is set to
// a stand-in value first, so a password_env the container does not provide
// fails the parse.
func (m *manifests) guacproxyConfig(t *testing.T) *config.Config {
	t.Helper()
	d, proxy, _ := m.pod(t)

	i := slices.Index(proxy.Args, "--config")
	if i < 0 || i+1 >= len(proxy.Args) {
		t.Fatalf("%s container args %q name no --config file", guacproxyName, proxy.Args)
	}
	file := proxy.Args[i+1]
	var volume string
	for _, vm := range proxy.VolumeMounts {
		if vm.MountPath == path.Dir(file) && vm.SubPath == "" {
			volume = vm.Name
		}
	}
	var cmName string
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == volume && v.ConfigMap != nil {
			cmName = v.ConfigMap.Name
		}
	}
	if cmName == "" {
		t.Fatalf("no ConfigMap volume is mounted at %s in the %s container",
			path.Dir(file), guacproxyName)
	}
	var data string
	for _, cm := range m.configMaps {
		if cm.Name == cmName {
			data = cm.Data[path.Base(file)]
		}
	}
	if data == "" {
		t.Fatalf("ConfigMap %s has no key %s", cmName, path.Base(file))
	}

	for _, e := range proxy.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			t.Setenv(e.Name, "stand-in for "+e.ValueFrom.SecretKeyRef.Key)
		}
	}
	cfg, err := config.Parse([]byte(data))
	if err != nil {
		t.Fatalf("ConfigMap %s, key %s: %v", cmName, path.Base(file), err)
	}
	return cfg
}

// portNumber resolves a port given by number or by container port name.
func portNumber(p intstr.IntOrString, containers ...*corev1.Container) (int32, bool) {
	if p.Type == intstr.Int {
		return p.IntVal, p.IntVal != 0
	}
	for _, c := range containers {
		for _, cp := range c.Ports {
			if cp.Name == p.StrVal {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

// listenPort returns the port of a listen address and whether its host is a
// wildcard that other pods and the kubelet can reach.
func listenPort(t *testing.T, field, addr string) (int32, bool) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s: %v", field, err)
	}
	n, err := strconv.ParseInt(port, 10, 32)
	if err != nil {
		t.Fatalf("%s: %v", field, err)
	}
	ip := net.ParseIP(host)
	return int32(n), host == "" || (ip != nil && ip.IsUnspecified())
}

func preStopSleep(c *corev1.Container) (time.Duration, bool) {
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		return 0, false
	}
	return time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second, true
}

func selects(t *testing.T, sel *metav1.LabelSelector, set map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatal(err)
	}
	return !s.Empty() && s.Matches(labels.Set(set))
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	m := load(t)
	k := m.kustomization
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("%s is %s %s; want kustomize.config.k8s.io/v1beta1 Kustomization",
			kustomizeFile, k.APIVersion, k.Kind)
	}
	got := slices.Sorted(slices.Values(k.Resources))
	if want := m.files; !slices.Equal(got, want) {
		t.Errorf("%s resources = %q; want every manifest here, %q", kustomizeFile, got, want)
	}
	if len(m.namespaces) != 1 || m.namespaces[0].Name != k.Namespace {
		t.Errorf("%s namespace %q is not the one Namespace declared here",
			kustomizeFile, k.Namespace)
	}
}

func TestContainersAreLockedDown(t *testing.T) {
	m := load(t)
	pinned := make(map[string]bool) // images kustomize pins
	for _, img := range m.kustomization.Images {
		pinned[img.Name] = img.Digest != "" || (img.NewTag != "" && img.NewTag != "latest")
	}
	if len(m.deployments) == 0 {
		t.Fatal("no deployments")
	}
	for _, d := range m.deployments {
		spec := d.Spec.Template.Spec
		for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
			t.Run(d.Name+"/"+c.Name, func(t *testing.T) {
				checkSecurityContext(t, c.SecurityContext)
				checkResources(t, c.Resources)
				name, tag := splitImage(c.Image)
				if !pinned[name] && (tag == "" || tag == "latest") {
					t.Errorf("image %q is not pinned to a version", c.Image)
				}
			})
		}
	}
}

func checkSecurityContext(t *testing.T, sc *corev1.SecurityContext) {
	t.Helper()
	if sc == nil {
		t.Fatal("no securityContext")
	}
	isTrue := func(b *bool) bool { return b != nil && *b }
	if !isTrue(sc.RunAsNonRoot) {
		t.Error("runAsNonRoot is not true")
	}
	if !isTrue(sc.ReadOnlyRootFilesystem) {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if isTrue(sc.Privileged) {
		t.Error("privileged is true")
	}
	caps := sc.Capabilities
	if caps == nil || !slices.Contains(caps.Drop, "ALL") || len(caps.Add) > 0 {
		t.Errorf("capabilities = %+v; want drop [ALL] and nothing added", caps)
	}
	if p := sc.SeccompProfile; p == nil || p.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile = %+v; want RuntimeDefault", p)
	}
}

func checkResources(t *testing.T, r corev1.ResourceRequirements) {
	t.Helper()
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := r.Requests[name]; !ok {
			t.Errorf("no %s request", name)
		}
		if _, ok := r.Limits[name]; !ok {
			t.Errorf("no %s limit", name)
		}
	}
}

// splitImage splits an image reference into its name and its tag, or its
// digest if it has one.
func splitImage(image string) (name, tag string) {
	if name, digest, ok := strings.Cut(image, "@"); ok {
		return name, digest
	}
	slash := strings.LastIndex(image, "/")
	if colon := strings.LastIndex(image, ":"); colon > slash {
		return image[:colon], image[colon+1:]
	}
	return image, ""
}

func hasPort(c *corev1.Container, n int32) bool {
	return slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool {
		return p.ContainerPort == n
	})
}

func TestGuacproxyProbesTheAdminPort(t *testing.T) {
	m := load(t)
	_, proxy, _ := m.pod(t)
	cfg := m.guacproxyConfig(t)

	admin, reachable := listenPort(t, "admin_listen", cfg.AdminListen)
	if !reachable {
		t.Errorf("admin_listen %s is not on the pod's address; the kubelet cannot probe it",
			cfg.AdminListen)
	}
	listen, reachable := listenPort(t, "listen", cfg.Listen)
	if !reachable {
		t.Errorf("listen %s is not on the pod's address; the Service cannot reach it", cfg.Listen)
	}
	for _, want := range []int32{listen, admin} {
		if !hasPort(proxy, want) {
			t.Errorf("%s container does not declare port %d from its config", guacproxyName, want)
		}
	}

	tests := []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"readinessProbe", proxy.ReadinessProbe, "/readyz"},
		{"livenessProbe", proxy.LivenessProbe, "/healthz"},
	}
	for _, tt := range tests {
		if tt.probe == nil || tt.probe.HTTPGet == nil {
			t.Errorf("%s: missing or not httpGet", tt.name)
			continue
		}
		get := tt.probe.HTTPGet
		if get.Path != tt.path {
			t.Errorf("%s path = %q; want %q", tt.name, get.Path, tt.path)
		}
		if port, ok := portNumber(get.Port, proxy); !ok || port != admin {
			t.Errorf("%s port = %s (%d); want admin_listen's port %d",
				tt.name, get.Port.String(), port, admin)
		}
	}
}

func TestGuacproxyTalksToItsOwnWebApp(t *testing.T) {
	m := load(t)
	_, _, webApp := m.pod(t)
	cfg := m.guacproxyConfig(t)

	u, err := url.Parse(cfg.Guacamole.URL)
	if err != nil {
		t.Fatal(err)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); (ip == nil || !ip.IsLoopback()) && host != "localhost" {
		t.Errorf("guacamole.url host = %q; want loopback, the web app in the same pod", host)
	}
	port, err := strconv.ParseInt(u.Port(), 10, 32)
	if err != nil || !hasPort(webApp, int32(port)) {
		t.Errorf("guacamole.url port %d is not a port of the %s container", port, webAppName)
	}
}

func TestShutdownFitsTheGracePeriod(t *testing.T) {
	m := load(t)
	d, proxy, webApp := m.pod(t)
	cfg := m.guacproxyConfig(t)

	proxyStop, ok := preStopSleep(proxy)
	if !ok || proxyStop <= 0 {
		t.Fatalf("%s container has no preStop sleep", guacproxyName)
	}
	// guacproxy is gone after its preStop sleep, the drain and the
	// revocations, each at its bound.
	proxyDone := proxyStop + cfg.ShutdownGrace + 2*cfg.Guacamole.Timeout

	gp := d.Spec.Template.Spec.TerminationGracePeriodSeconds
	if gp == nil {
		t.Fatal("terminationGracePeriodSeconds is not set")
	}
	grace := time.Duration(*gp) * time.Second
	if grace < proxyDone {
		t.Errorf("terminationGracePeriodSeconds = %s; want at least %s "+
			"(preStop %s + shutdown_grace %s + 2 x guacamole.timeout %s)",
			grace, proxyDone, proxyStop, cfg.ShutdownGrace, cfg.Guacamole.Timeout)
	}

	// The web application must serve guacproxy's drain and revocations, and
	// still have time to stop.
	webStop, _ := preStopSleep(webApp)
	if webStop < proxyDone {
		t.Errorf("%s preStop sleep = %s; want at least %s, until guacproxy has exited",
			webAppName, webStop, proxyDone)
	}
	if grace <= webStop {
		t.Errorf("terminationGracePeriodSeconds = %s; want more than the %s preStop sleep %s",
			grace, webAppName, webStop)
	}
}

func TestSessionTimeoutsAgree(t *testing.T) {
	m := load(t)
	_, _, webApp := m.pod(t)
	cfg := m.guacproxyConfig(t)

	i := slices.IndexFunc(webApp.Env, func(e corev1.EnvVar) bool {
		return e.Name == "API_SESSION_TIMEOUT"
	})
	if i < 0 {
		t.Fatalf("%s container does not set API_SESSION_TIMEOUT", webAppName)
	}
	minutes, err := strconv.Atoi(webApp.Env[i].Value)
	if err != nil {
		t.Fatalf("API_SESSION_TIMEOUT = %q; want whole minutes", webApp.Env[i].Value)
	}
	if got, want := time.Duration(minutes)*time.Minute, cfg.Guacamole.SessionTimeout; got != want {
		t.Errorf("API_SESSION_TIMEOUT = %s; want guacproxy's session_timeout, %s", got, want)
	}
}

func TestNetworkPolicyAdmitsOnlyGuacproxy(t *testing.T) {
	m := load(t)
	d, proxy, webApp := m.pod(t)
	podLabels := d.Spec.Template.Labels
	cfg := m.guacproxyConfig(t)
	listen, _ := listenPort(t, "listen", cfg.Listen)

	var found, toolsAdmitted bool
	for _, np := range m.policies {
		if !selects(t, &np.Spec.PodSelector, podLabels) {
			continue
		}
		found = true
		if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			t.Errorf("NetworkPolicy %s does not govern ingress", np.Name)
		}
		for i, rule := range np.Spec.Ingress {
			if len(rule.Ports) == 0 {
				t.Errorf("NetworkPolicy %s ingress[%d] admits every port", np.Name, i)
			}
			for _, p := range rule.Ports {
				if p.Port == nil {
					t.Errorf("NetworkPolicy %s ingress[%d] admits every port", np.Name, i)
					continue
				}
				n, ok := portNumber(*p.Port, proxy, webApp)
				if !ok {
					t.Errorf("NetworkPolicy %s ingress[%d] port %s is no port of the pod",
						np.Name, i, p.Port.String())
					continue
				}
				last := n
				if p.EndPort != nil {
					last = *p.EndPort
				}
				for _, wp := range webApp.Ports {
					if wp.ContainerPort >= n && wp.ContainerPort <= last {
						t.Errorf("NetworkPolicy %s ingress[%d] admits the web app's port %d",
							np.Name, i, wp.ContainerPort)
					}
				}
				if n == listen {
					toolsAdmitted = true
				}
			}
		}
	}
	if !found {
		t.Fatalf("no NetworkPolicy selects the pod labelled %v", podLabels)
	}
	if !toolsAdmitted {
		t.Errorf("no NetworkPolicy rule admits tools to guacproxy's port %d", listen)
	}
}

func TestNoServiceExposesTheWebApp(t *testing.T) {
	m := load(t)
	d, proxy, webApp := m.pod(t)
	podLabels := d.Spec.Template.Labels

	var exposed bool
	for _, svc := range m.services {
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		if sel.Empty() || !sel.Matches(labels.Set(podLabels)) {
			continue
		}
		for _, p := range svc.Spec.Ports {
			target := p.TargetPort
			if target == (intstr.IntOrString{}) {
				target = intstr.FromInt32(p.Port)
			}
			n, ok := portNumber(target, proxy, webApp)
			if !ok {
				t.Errorf("Service %s port %s targets %s, no port of the pod",
					svc.Name, p.Name, target.String())
				continue
			}
			if hasPort(webApp, n) {
				t.Errorf("Service %s port %s exposes the web app's port %d", svc.Name, p.Name, n)
			}
			exposed = exposed || hasPort(proxy, n)
		}
	}
	if !exposed {
		t.Errorf("no Service exposes the %s container", guacproxyName)
	}
}

func TestSecretsHoldOnlyPlaceholders(t *testing.T) {
	m := load(t)
	if len(m.secrets) == 0 {
		t.Fatal("no Secrets")
	}
	for _, s := range m.secrets {
		if len(s.Data) > 0 {
			t.Errorf("Secret %s has data; want readable placeholders in stringData", s.Name)
		}
		for k, v := range s.StringData {
			if strings.Contains(k, "password") && !strings.Contains(v, "REPLACE-ME") {
				t.Errorf("Secret %s key %s = %q; want a value marked REPLACE-ME", s.Name, k, v)
			}
		}
	}
}
