// The JWT `typ` of the tokens Gatehouse mints, shared by the CA that mints and checks them and the
// sidecar that must tell a single-use join token from a projected service-account token.

export const JOIN_TOKEN_TYP = 'gatehouse-join+jwt'
