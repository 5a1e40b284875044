//! The Front End role: registrar, presence and IM server for the users homed on it.

pub mod call_state;
pub mod calls;
pub mod contacts;
pub mod dispatch;
pub mod error;
pub mod im;
pub mod locations;
pub mod overload;
pub mod pool;
pub mod pooled;
pub mod presence;
pub mod registrar;
pub mod resiliency;
pub mod server;
pub mod standalone;
pub mod store;
pub mod users;
pub mod watchers;

pub use dispatch::{run, serve};
pub use error::{FrontEndError, UsersFileError};
pub use server::{FrontEnd, FrontEndConfig, Home, Refusal};
pub use standalone::{run_standalone, StandaloneOptions};
pub use store::{Binding, Publication, RegisterAction, UserStore, UserView, Write};
pub use users::Credentials;
