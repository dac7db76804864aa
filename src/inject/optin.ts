import { ANNOTATION, NAMESPACE_LABEL } from './injector-config.ts'

// Who asked for a sidecar. Injection is opt-in: the pod's own annotation, or its namespace's label.
// An explicit "disabled" on the pod wins over everything: the service owner's word is final.

export interface OptIn {
  optedIn: boolean
  /** Stable category: pod-annotation, namespace-label, disabled-by-annotation, not-opted-in, invalid-annotation. */
  reason: string
  detail: string
  warnings: string[]
}

export function decideOptIn (annotations: Record<string, string>, namespaceLabels: Record<string, string>): OptIn {
  const pod = annotations[ANNOTATION.inject]
  const ns = namespaceLabels[NAMESPACE_LABEL]
  if (pod === 'disabled') return { optedIn: false, reason: 'disabled-by-annotation', detail: `pod annotation ${ANNOTATION.inject}: disabled`, warnings: [] }
  if (pod === 'enabled') return { optedIn: true, reason: 'pod-annotation', detail: `pod annotation ${ANNOTATION.inject}: enabled`, warnings: [] }
  if (pod !== undefined) {
    // A value we do not understand ("true", "yes") is not guessed at either way: nothing changes,
    // and the warning tells the owner which two words work.
    return {
      optedIn: false,
      reason: 'invalid-annotation',
      detail: `pod annotation ${ANNOTATION.inject}: ${JSON.stringify(pod.slice(0, 40))} is neither "enabled" nor "disabled"`,
      warnings: [`gatehouse: not injected: ${ANNOTATION.inject} must be "enabled" or "disabled", got ${JSON.stringify(pod.slice(0, 40))}`]
    }
  }
  if (ns === 'enabled') return { optedIn: true, reason: 'namespace-label', detail: `namespace label ${NAMESPACE_LABEL}=enabled`, warnings: [] }
  return { optedIn: false, reason: 'not-opted-in', detail: `no ${ANNOTATION.inject} annotation and no ${NAMESPACE_LABEL}=enabled namespace label`, warnings: [] }
}
