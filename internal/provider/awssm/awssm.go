// Package awssm reads secrets from AWS Secrets Manager with aws-sdk-go-v2.
//
// A path is a secret id (its name or ARN), optionally followed by a version
// selector: "prod/db" reads the AWSCURRENT version, "prod/db::stage=AWSPREVIOUS"
// a staging label, "prod/db::version=ID" a version id. ("::" cannot occur in
// a secret name or ARN.) A SecretString comes back as its text, so "#key"
// picks a field of a JSON secret; a SecretBinary comes back as its bytes.
//
// Credentials come from the SDK's default chain (environment, shared
// profile, web identity, ECS task role, EC2 instance role). Version asks
// DescribeSecret which version id holds the wanted stage, without fetching
// the value. GetMany fetches up to 20 secrets per BatchGetSecretValue call
// and falls back to one GetSecretValue per secret when the service or the
// credentials' policy does not allow the batch call.
package awssm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/dso-project/dso/internal/provider"
	"github.com/dso-project/dso/internal/provider/retry"
)

// DefaultStage is the staging label read when a path names none.
const DefaultStage = "AWSCURRENT"

// batchSize is the most secrets BatchGetSecretValue takes by id.
const batchSize = 20

// Options configure an AWS Secrets Manager provider.
type Options struct {
	Name     string // provider name in errors; "aws" if empty
	Region   string // else AWS_REGION or the profile's region
	Profile  string // shared config profile; the default chain if empty
	Endpoint string // endpoint override (BaseEndpoint), e.g. a VPC endpoint
	Retry    retry.Policy
	// Credentials replaces the default chain; for tests and embedding.
	Credentials aws.CredentialsProvider
}

// Provider reads secrets from one AWS account and region.
type Provider struct {
	name    string
	client  *secretsmanager.Client
	retry   retry.Policy
	noBatch atomic.Bool // BatchGetSecretValue was refused once
}

// New loads the AWS configuration (files and environment, no network) and
// returns a provider.
func New(opts Options) (*Provider, error) {
	name := opts.Name
	if name == "" {
		name = "aws"
	}
	if err := opts.Retry.Validate(); err != nil {
		return nil, fmt.Errorf("provider %q: %v", name, err)
	}
	loaders := []func(*config.LoadOptions) error{
		// The SDK must not retry on its own: the retry policy is ours.
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
	}
	if opts.Region != "" {
		loaders = append(loaders, config.WithRegion(opts.Region))
	}
	if opts.Profile != "" {
		loaders = append(loaders, config.WithSharedConfigProfile(opts.Profile))
	}
	if opts.Credentials != nil {
		loaders = append(loaders, config.WithCredentialsProvider(opts.Credentials))
	}
	cfg, err := config.LoadDefaultConfig(context.Background(), loaders...)
	if err != nil {
		return nil, fmt.Errorf("provider %q: loading the AWS configuration: %w", name, err)
	}
	if cfg.Region == "" {
		return nil, fmt.Errorf("provider %q: no region: set region in dso.yaml, AWS_REGION, or the profile's region", name)
	}
	client := secretsmanager.NewFromConfig(cfg, func(o *secretsmanager.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
	})
	return &Provider{name: name, client: client, retry: opts.Retry.WithDefaults()}, nil
}

// ref is a parsed path.
type ref struct {
	id, stage, versionID string
}

func parsePath(path string) (ref, error) {
	id, sel, ok := strings.Cut(path, "::")
	if !ok {
		return ref{id: path, stage: DefaultStage}, nil
	}
	k, v, _ := strings.Cut(sel, "=")
	switch {
	case id == "":
		return ref{}, errors.New("empty secret id before '::'")
	case v == "":
		return ref{}, fmt.Errorf("version selector %q: want ::stage=LABEL or ::version=ID", sel)
	case k == "stage":
		return ref{id: id, stage: v}, nil
	case k == "version":
		return ref{id: id, versionID: v}, nil
	}
	return ref{}, fmt.Errorf("version selector %q: want ::stage=LABEL or ::version=ID", sel)
}

// Get returns the value of the selected version and its version id.
func (p *Provider) Get(ctx context.Context, path string) (provider.Secret, error) {
	r, err := parsePath(path)
	if err != nil {
		return provider.Secret{}, &provider.Error{Provider: p.name, Path: path, Err: err}
	}
	in := &secretsmanager.GetSecretValueInput{SecretId: aws.String(r.id)}
	if r.versionID != "" {
		in.VersionId = aws.String(r.versionID)
	} else {
		in.VersionStage = aws.String(r.stage)
	}
	var out *secretsmanager.GetSecretValueOutput
	err = p.retry.Do(ctx, func(ctx context.Context) error {
		var err error
		out, err = p.client.GetSecretValue(ctx, in)
		return p.classify(path, err)
	})
	if err != nil {
		return provider.Secret{}, err
	}
	return secretOf(out.SecretString, out.SecretBinary, out.VersionId), nil
}

func secretOf(s *string, bin []byte, version *string) provider.Secret {
	v := bin
	if s != nil {
		v = []byte(*s)
	}
	return provider.Secret{Value: v, Version: aws.ToString(version)}
}

// Version returns the id of the version holding the selected stage (or the
// selected version id, if it exists), from DescribeSecret: no value is read.
func (p *Provider) Version(ctx context.Context, path string) (string, error) {
	r, err := parsePath(path)
	if err != nil {
		return "", &provider.Error{Provider: p.name, Path: path, Err: err}
	}
	var out *secretsmanager.DescribeSecretOutput
	err = p.retry.Do(ctx, func(ctx context.Context) error {
		var err error
		out, err = p.client.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(r.id)})
		return p.classify(path, err)
	})
	if err != nil {
		return "", err
	}
	if out.DeletedDate != nil {
		return "", &provider.Error{Provider: p.name, Path: path, Kind: provider.ErrNotFound, Err: errors.New("the secret is scheduled for deletion")}
	}
	for id, stages := range out.VersionIdsToStages {
		if (r.versionID != "" && id == r.versionID) || (r.versionID == "" && slices.Contains(stages, r.stage)) {
			return id, nil
		}
	}
	what := "no version has the stage " + r.stage
	if r.versionID != "" {
		what = "no version has that id"
	}
	return "", &provider.Error{Provider: p.name, Path: path, Kind: provider.ErrNotFound, Err: errors.New(what)}
}

// GetMany fetches the AWSCURRENT versions of plain ids with
// BatchGetSecretValue, 20 per call; paths with a version selector, and all
// paths once the batch call has been refused, are fetched one by one.
func (p *Provider) GetMany(ctx context.Context, paths []string) []provider.Result {
	results := make([]provider.Result, len(paths))
	var batch []int // indexes of paths for the batch call
	for i, path := range paths {
		if !strings.Contains(path, "::") {
			batch = append(batch, i)
		}
	}
	for start := 0; start < len(batch) && !p.noBatch.Load(); start += batchSize {
		chunk := batch[start:min(start+batchSize, len(batch))]
		if !p.getBatch(ctx, paths, chunk, results) {
			break
		}
	}
	for i, path := range paths {
		if results[i].Err == nil && results[i].Secret.Version == "" {
			s, err := p.Get(ctx, path)
			results[i] = provider.Result{Secret: s, Err: err}
		}
	}
	return results
}

// getBatch fills results for the paths at idx with one batch call. It
// returns false, filling nothing, when the batch call is not allowed.
func (p *Provider) getBatch(ctx context.Context, paths []string, idx []int, results []provider.Result) bool {
	ids := make([]string, len(idx))
	for j, i := range idx {
		ids[j] = paths[i]
	}
	var out *secretsmanager.BatchGetSecretValueOutput
	err := p.retry.Do(ctx, func(ctx context.Context) error {
		var err error
		out, err = p.client.BatchGetSecretValue(ctx, &secretsmanager.BatchGetSecretValueInput{SecretIdList: ids})
		if batchRefused(err) {
			return err
		}
		return p.classify(strings.Join(ids, ","), err)
	})
	if batchRefused(err) {
		p.noBatch.Store(true)
		return false
	}
	if err != nil {
		var pe *provider.Error
		errors.As(err, &pe)
		for _, i := range idx {
			results[i] = provider.Result{Err: &provider.Error{Provider: p.name, Path: paths[i], Kind: pe.Kind, Err: pe.Err}}
		}
		return true
	}
	for _, i := range idx {
		id := paths[i]
		for _, v := range out.SecretValues {
			if aws.ToString(v.Name) == id || aws.ToString(v.ARN) == id {
				results[i] = provider.Result{Secret: secretOf(v.SecretString, v.SecretBinary, v.VersionId)}
			}
		}
		for _, e := range out.Errors {
			if aws.ToString(e.SecretId) == id {
				code, msg := aws.ToString(e.ErrorCode), aws.ToString(e.Message)
				results[i] = provider.Result{Err: &provider.Error{Provider: p.name, Path: id, Kind: codeClass(code), Err: fmt.Errorf("%s: %s", code, msg)}}
			}
		}
		if results[i].Err == nil && results[i].Secret.Version == "" {
			results[i] = provider.Result{Err: &provider.Error{Provider: p.name, Path: id, Kind: provider.ErrNotFound, Err: errors.New("not in the batch answer")}}
		}
	}
	return true
}

// batchRefused reports an answer saying BatchGetSecretValue cannot be used
// here: an emulator or region without it, or a policy that does not allow it
// (it needs secretsmanager:BatchGetSecretValue and ListSecrets).
func batchRefused(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode() {
	case "InvalidAction", "UnknownOperationException", "NotImplemented", "AccessDeniedException":
		return true
	}
	return false
}

// classify turns an SDK error into a provider.Error (nil stays nil).
func (p *Provider) classify(path string, err error) error {
	if err == nil {
		return nil
	}
	var pe *provider.Error
	if errors.As(err, &pe) {
		return err
	}
	e := &provider.Error{Provider: p.name, Path: path}
	var ae smithy.APIError
	var re *smithyhttp.ResponseError
	switch {
	case errors.As(err, &ae):
		e.Kind = codeClass(ae.ErrorCode())
		if e.Kind == nil && errors.As(err, &re) {
			e.Kind = retry.HTTPStatus(re.HTTPStatusCode())
		}
		e.Err = fmt.Errorf("%s: %s", ae.ErrorCode(), ae.ErrorMessage())
	case errors.As(err, &re) && re.HTTPStatusCode() >= 200 && re.HTTPStatusCode() < 300:
		// An answer that came but could not be read (cut short, or not
		// what the API sends): another attempt may read it. Its body is
		// never quoted: it may hold a value.
		e.Kind = provider.ErrUnreachable
		e.Err = fmt.Errorf("HTTP %d, but %w", re.HTTPStatusCode(), retry.ErrUnreadable)
	case errors.As(err, &re) && re.HTTPStatusCode() != 0:
		e.Kind = retry.HTTPStatus(re.HTTPStatusCode())
		e.Err = fmt.Errorf("HTTP %d", re.HTTPStatusCode())
	default: // no answer: the request could not be sent or timed out
		e.Kind = retry.Transport(err)
		e.Err = retry.TimeoutDetail(err, p.retry.Timeout)
	}
	return e
}

// codeClass classifies a Secrets Manager error code.
func codeClass(code string) error {
	switch code {
	case "ResourceNotFoundException":
		return provider.ErrNotFound
	case "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
		"ExpiredTokenException", "InvalidClientTokenId", "DecryptionFailure":
		return provider.ErrDenied
	case "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded":
		return provider.ErrThrottled
	case "InternalServiceError", "InternalFailure", "ServiceUnavailable":
		return provider.ErrUnreachable
	}
	return nil
}
