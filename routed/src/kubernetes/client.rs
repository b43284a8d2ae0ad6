//! The API client every watch shares: credentials from `--kubeconfig`, else the
//! in-cluster service account, else KUBECONFIG or ~/.kube/config.

use crate::error::RoutedError;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::Path;

/// A client and the server it talks to (for error messages).
pub async fn connect(kubeconfig: Option<&Path>) -> Result<(kube::Client, String), RoutedError> {
    let config = client_config(kubeconfig).await?;
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)
        .map_err(|e| RoutedError::KubeConfig(format!("cannot build a client for {server}: {e}")))?;
    Ok((client, server))
}

/// Credentials: `--kubeconfig`, else the in-cluster service account (token and CA under
/// /var/run/secrets/kubernetes.io/serviceaccount), else KUBECONFIG or ~/.kube/config.
async fn client_config(kubeconfig: Option<&Path>) -> Result<kube::Config, RoutedError> {
    if let Some(path) = kubeconfig {
        let bad = |e: String| RoutedError::KubeConfig(format!("{}: {e}", path.display()));
        let file = Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
        return kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .map_err(|e| bad(e.to_string()));
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return kube::Config::incluster().map_err(|e| {
            RoutedError::KubeConfig(format!(
                "in-cluster service account (KUBERNETES_SERVICE_HOST/PORT, /var/run/secrets/kubernetes.io/serviceaccount): {e}"
            ))
        });
    }
    kube::Config::infer().await.map_err(|e| {
        RoutedError::KubeConfig(format!(
            "no --kubeconfig, not in a pod, and KUBECONFIG or ~/.kube/config: {e}"
        ))
    })
}
