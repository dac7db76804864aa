import { GatehouseError } from '../errors.ts'

/** Input the injector cannot work on: a malformed pod, workload or manifest. */
export class InjectInvalidError extends GatehouseError {
  constructor (message: string) { super('GH_INJECT_INVALID', 400, message) }
}
