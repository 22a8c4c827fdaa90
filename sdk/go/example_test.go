package msb_test

import (
	"context"
	"fmt"
	"log"

	msb "msb.dev/sdk/go"
)

// Runs a command in a fresh sandbox. The runtime is found through $MSB_BIN or `msb` on PATH
// (the tests point MSB_BIN at dist/msb and MSB_HOME at a temporary directory).
func Example() {
	ctx := context.Background()
	client, err := msb.Start(ctx, msb.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close() // stops and removes the unnamed sandbox below

	sandbox, err := client.Create(ctx, msb.SandboxOptions{MemoryMiB: 256})
	if err != nil {
		log.Fatal(err)
	}
	result, err := sandbox.Exec(ctx, []string{"sh", "-c", "echo hello from $(uname -s); exit 7"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s", result.Stdout)
	fmt.Println("exit code", result.ExitCode)

	if err := sandbox.WriteFile(ctx, "/tmp/greeting", []byte("hi"), 0o644); err != nil {
		log.Fatal(err)
	}
	data, err := sandbox.ReadFile(ctx, "/tmp/greeting")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(data))
	// Output:
	// hello from Linux
	// exit code 7
	// hi
}
