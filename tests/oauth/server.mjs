// A real OAuth 2.0 authorization server for the tests: oidc-provider on
// 127.0.0.1, with one confidential client whose PKCE is required, refresh
// tokens that rotate, RFC 7009 revocation and RFC 7662 introspection.
// The operator's approval is given at once (the test is the browser).
//
// Environment: PORT (the port to listen on), REDIRECT (the client's one redirect URI),
// SCOPES (the resource scopes it grants, space-separated), ACCESS_TTL
// (seconds an access token lives), CLIENT_SECRET.
// Prints `listening PORT` when ready.
import Provider from 'oidc-provider';

const redirect = process.env.REDIRECT;
const scopes = (process.env.SCOPES || '').split(' ').filter(Boolean);
const accessTtl = Number(process.env.ACCESS_TTL || 3600);
const resource = 'https://api.standin.test';

const configuration = {
  clients: [{
    client_id: 'clancy',
    client_secret: process.env.CLIENT_SECRET || 'the-client-secret',
    redirect_uris: [redirect],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: scopes.join(' '),
        accessTokenFormat: 'opaque',
        accessTokenTTL: accessTtl,
      }),
    },
  },
  scopes: ['offline_access'],
  issueRefreshToken: (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => true,
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: {
    AccessToken: accessTtl,
    AuthorizationCode: 60,
    Grant: 3600,
    Interaction: 600,
    Session: 3600,
    RefreshToken: 86400,
  },
};

const port = Number(process.env.PORT);
const provider = new Provider(`http://127.0.0.1:${port}`, configuration);

// The operator approves whatever was asked, at once.
provider.use(async (ctx, next) => {
  if (!ctx.path.startsWith('/interaction/')) {
    await next();
    return;
  }
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: 'operator', clientId: details.params.client_id });
  const asked = String(details.params.scope || '').split(' ').filter(Boolean);
  grant.addResourceScope(resource, asked.filter((s) => scopes.includes(s)).join(' '));
  const grantId = await grant.save();
  await provider.interactionFinished(
    ctx.req,
    ctx.res,
    { login: { accountId: 'operator' }, consent: { grantId } },
    { mergeWithLastSubmission: false },
  );
});

provider.listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
