/* The sandbox ("pause") process of the cluster's containerd runs (hack/cluster.sh up --runtime
 * containerd): it holds the pod's namespaces, reaps the zombies of a shared PID namespace and
 * exits on SIGINT/SIGTERM. Berth needs none (its monitor holds the namespaces); containerd 1.6
 * runs one per pod. hack/cluster/images.sh builds it static into the image
 * registry.k8s.io/pause:3.10.2 of the local registry. */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
    (void)sig;
    _exit(0);
}

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
        return 1;
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP;
    if (sigaction(SIGCHLD, &sa, NULL) != 0)
        return 2;
    for (;;)
        pause();
}
