//! The `Users` service: KurrentDB's user management (create, update, delete, enable, disable,
//! details, change and reset password) over `annals_auth::Auth`, which decides who may call
//! what. A server without `--auth` has no users: every call answers FAILED_PRECONDITION saying
//! so.

use std::pin::Pin;
use std::sync::Arc;

use annals_proto::users::users_server::Users;
use annals_proto::users::{
    ChangePasswordReq, ChangePasswordResp, CreateReq, CreateResp, DeleteReq, DeleteResp,
    DetailsReq, DetailsResp, DisableReq, DisableResp, EnableReq, EnableResp, ResetPasswordReq,
    ResetPasswordResp, UpdateReq, UpdateResp, details_resp,
};
use annals_server::{Auth, Principal, ServerState};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::error::GrpcError;

/// Nanoseconds per .NET tick, the unit of `ticks_since_epoch`.
const NANOS_PER_TICK: i64 = 100;

#[derive(Clone, Debug)]
pub(crate) struct UsersService {
    state: ServerState,
}

impl UsersService {
    pub(crate) fn new(state: ServerState) -> Self {
        Self { state }
    }

    /// The server's users and who is calling.
    fn begin<T>(&self, request: &Request<T>) -> Result<(Arc<Auth>, Principal), Status> {
        let auth = self.state.auth.clone().ok_or_else(|| {
            Status::failed_precondition("this server runs without users (start it with --auth)")
        })?;
        Ok((auth, self.state.principal(request.extensions())))
    }
}

fn options<T>(options: Option<T>, method: &str) -> Result<T, Status> {
    options.ok_or_else(|| Status::invalid_argument(format!("{method} without options")))
}

fn status(e: annals_server::AuthError) -> Status {
    GrpcError::from(e).into()
}

type DetailsStream = Pin<Box<dyn Stream<Item = Result<DetailsResp, Status>> + Send>>;

#[tonic::async_trait]
impl Users for UsersService {
    async fn create(&self, request: Request<CreateReq>) -> Result<Response<CreateResp>, Status> {
        let (auth, who) = self.begin(&request)?;
        let o = options(request.into_inner().options, "Create")?;
        auth.create_user(&who, &o.login_name, &o.full_name, o.groups, o.password)
            .await
            .map_err(status)?;
        Ok(Response::new(CreateResp {}))
    }

    async fn update(&self, request: Request<UpdateReq>) -> Result<Response<UpdateResp>, Status> {
        let (auth, who) = self.begin(&request)?;
        let o = options(request.into_inner().options, "Update")?;
        let password = (!o.password.is_empty()).then_some(o.password);
        auth.update_user(&who, &o.login_name, &o.full_name, o.groups, password)
            .await
            .map_err(status)?;
        Ok(Response::new(UpdateResp {}))
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        let (auth, who) = self.begin(&request)?;
        let o = options(request.into_inner().options, "Delete")?;
        auth.delete_user(&who, &o.login_name)
            .await
            .map_err(status)?;
        Ok(Response::new(DeleteResp {}))
    }

    async fn disable(&self, request: Request<DisableReq>) -> Result<Response<DisableResp>, Status> {
        let (auth, who) = self.begin(&request)?;
        let o = options(request.into_inner().options, "Disable")?;
        auth.set_enabled(&who, &o.login_name, false)
            .await
            .map_err(status)?;
        Ok(Response::new(DisableResp {}))
    }

    async fn enable(&self, request: Request<EnableReq>) -> Result<Response<EnableResp>, Status> {
        let (auth, who) = self.begin(&request)?;
        let o = options(request.into_inner().options, "Enable")?;
        auth.set_enabled(&who, &o.login_name, true)
            .await
            .map_err(status)?;
        Ok(Response::new(EnableResp {}))
    }

    type DetailsStream = DetailsStream;

    async fn details(
        &self,
        request: Request<DetailsReq>,
    ) -> Result<Response<Self::DetailsStream>, Status> {
        let (auth, who) = self.begin(&request)?;
        // No options, or an empty login: every user.
        let login = request
            .into_inner()
            .options
            .map(|o| o.login_name)
            .filter(|l| !l.is_empty());
        let users = auth.details(&who, login.as_deref()).map_err(status)?;
        let answers: Vec<Result<DetailsResp, Status>> = users
            .into_iter()
            .map(|u| {
                Ok(DetailsResp {
                    user_details: Some(details_resp::UserDetails {
                        login_name: u.login,
                        full_name: u.full_name,
                        groups: u.groups,
                        last_updated: Some(details_resp::user_details::DateTime {
                            ticks_since_epoch: u.updated_nanos / NANOS_PER_TICK,
                        }),
                        disabled: u.disabled,
                    }),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(answers))))
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordReq>,
    ) -> Result<Response<ChangePasswordResp>, Status> {
        let (auth, who) = self.begin(&request)?;
        let o = options(request.into_inner().options, "ChangePassword")?;
        auth.change_password(&who, &o.login_name, o.current_password, o.new_password)
            .await
            .map_err(status)?;
        Ok(Response::new(ChangePasswordResp {}))
    }

    async fn reset_password(
        &self,
        request: Request<ResetPasswordReq>,
    ) -> Result<Response<ResetPasswordResp>, Status> {
        let (auth, who) = self.begin(&request)?;
        let o = options(request.into_inner().options, "ResetPassword")?;
        auth.reset_password(&who, &o.login_name, o.new_password)
            .await
            .map_err(status)?;
        Ok(Response::new(ResetPasswordResp {}))
    }
}
