module msb.dev/sdk/go

go 1.19
