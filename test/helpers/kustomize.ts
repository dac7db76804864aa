import { mkdirSync, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { stringify } from 'yaml'
import { deployDir, kustomize, type K8sObject } from './k8s-pod.ts'
import { tempDir, type Teardown } from './files.ts'

// An operator's overlay of deploy/, as README.md's "my-gatehouse" is, rendered by kubectl's kustomize:
// deploy/ as its resource, components of deploy/components/, and any other kustomization fields.
// Written to a temp dir. Paths are relative to the overlay: kustomize refuses an absolute path for a
// resource or component directory ("new root cannot be absolute").

export interface OverlayOptions {
  /** Directory names under deploy/components/, in order. */
  components?: string[]
  /** Other fields of the overlay's kustomization.yaml (images, patches, ...). */
  fields?: Record<string, unknown>
}

/** The overlay's objects, rendered; throws with kustomize's message when it does not render. */
export function renderOverlay (t: Teardown, opts: OverlayOptions = {}): K8sObject[] {
  const dir = join(tempDir(t, 'gh-overlay-'), 'my-gatehouse')
  mkdirSync(dir)
  const components = (opts.components ?? []).map(c => relative(dir, join(deployDir, 'components', c)))
  writeFileSync(join(dir, 'kustomization.yaml'), stringify({
    apiVersion: 'kustomize.config.k8s.io/v1beta1',
    kind: 'Kustomization',
    resources: [relative(dir, deployDir)],
    ...(components.length > 0 ? { components } : {}),
    ...opts.fields
  }))
  return kustomize(dir)
}
